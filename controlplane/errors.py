"""The control plane's exception tree. Domain code raises these; the gRPC
boundary (auth.ErrorMapping) turns each into a status code once."""

from __future__ import annotations

import grpc


class SpendgateError(Exception):
    code = grpc.StatusCode.INTERNAL


class InvalidArgument(SpendgateError):
    """A request field is wrong; the message starts with the field's name."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(SpendgateError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(SpendgateError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SpendgateError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(SpendgateError):
    code = grpc.StatusCode.FAILED_PRECONDITION
