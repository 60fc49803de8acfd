"""The routes' `check` hooks: what a route refuses because it could not be metered (routes.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dataplane.config import Settings
from dataplane.errors import BadRequest
from dataplane.inbound import RequestView
from dataplane.providers.families import Family, error_response
from dataplane.routes import ROUTES, Route

SETTINGS = Settings.from_env({})


def route(path: str) -> Route:
    (found,) = (r for r in ROUTES if r.path == path)
    return found


def responses(**fields: Any) -> RequestView:
    body = {"model": "gpt-4o-mini", "input": "hi", **fields}
    return RequestView(len(json.dumps(body).encode()), body)


@pytest.mark.parametrize("flag", [True, "true", 1])
def test_a_background_response_is_refused_in_the_openai_shape(flag: object) -> None:
    """`background: true` answers `queued` without usage and the provider runs it later: billed 0."""
    check = route("/v1/responses").check
    assert check is not None
    with pytest.raises(BadRequest) as info:
        check(responses(background=flag), SETTINGS)
    assert (info.value.status, info.value.param) == (400, "background")
    assert "cannot be metered by this gateway" in info.value.message
    assert "without `background`" in info.value.message
    response = error_response(info.value, route("/v1/responses").family)
    assert route("/v1/responses").family is Family.OPENAI and response.status_code == 400
    error = json.loads(bytes(response.body))["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "background")
    assert error["message"] == info.value.message


@pytest.mark.parametrize("fields", [{}, {"background": False}, {"background": None}])
def test_a_foreground_response_passes(fields: dict[str, Any]) -> None:
    check = route("/v1/responses").check
    assert check is not None
    check(responses(**fields), SETTINGS)  # no exception
