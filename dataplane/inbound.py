"""What the gateway reads from a client's request body before forwarding it.

Most APIs send a JSON object. Two do not: Deepgram's pre-recorded `/v1/listen`
takes the audio itself as the body (or JSON `{"url": …}`), and OpenAI's
`/v1/audio/transcriptions` is `multipart/form-data` with the audio file as one
part. For those the gateway keeps the form's text fields (the model, the
response format, …) and only the size of the uploaded media, which bounds the
estimate. Pure functions over bytes (and `read_raw`, which reads a body within a limit);
the body is forwarded untouched."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from starlette.requests import ClientDisconnect, Request

from dataplane.errors import BadRequest, TooLarge

BodyKind = Literal["json", "media", "multipart"]

# Form fields larger than this are uploads, whatever their headers say.
_MAX_FIELD_BYTES = 64 * 1024
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;,\s]+))', re.IGNORECASE)
_DISPOSITION_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
# Deeper than any request a provider documents (JSON Schemas for tools and structured output
# nest a few dozen levels at most), far shallower than the recursion limit (see parse_json).
MAX_JSON_DEPTH = 256
_TOO_DEEP = f"The JSON body of your request nests deeper than {MAX_JSON_DEPTH} levels."


class RequestView(NamedTuple):
    """A request as the estimate and the usage parsers see it (a tuple: one is made per request)."""

    raw_len: int
    body: dict[str, Any]  # the JSON object, the form's text fields, or {} for raw media
    query: Mapping[str, str] = MappingProxyType({})
    path_params: Mapping[str, str] = MappingProxyType({})
    upload_bytes: int = 0  # raw audio body, or the multipart file part(s)
    json_body: bool = True  # whether `body` is what will be forwarded (and may be rewritten)


def parse_json(raw: bytes, parse_float: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The JSON object a client sent, or BadRequest: never an exception of the parser's own.

    How deep a body nests is the client's choice, and Python's parser and serialiser both
    recurse: past about a thousand levels `json.loads` raises RecursionError, and a body it
    did parse could still overflow `json.dumps` when the gateway rewrites it, which runs
    deeper in the stack. So a body nested deeper than MAX_JSON_DEPTH is refused here, far
    below either limit, and whatever is accepted can be walked or re-serialised safely."""
    try:
        body = json.loads(raw) if parse_float is None else json.loads(raw, parse_float=parse_float)
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    except ValueError as exc:  # bad JSON or UTF-8, or an integer literal over 4,300 digits
        raise BadRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    # Only a body with more brackets than the limit can nest past it: most are spared the walk.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and nests_deeper(body, MAX_JSON_DEPTH):
        raise BadRequest(_TOO_DEEP)
    return body


def nests_deeper(value: object, limit: int) -> bool:
    """Whether `value` has a container more than `limit` levels down (itself is level 1).
    Iterative, so the check cannot itself run out of stack."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def read_body(
    kind: BodyKind,
    raw: bytes,
    content_type: str,
    query: Mapping[str, str],
    path_params: Mapping[str, str],
) -> RequestView:
    def view(body: dict[str, Any], upload: int = 0, is_json: bool = True) -> RequestView:
        return RequestView(len(raw), body, query, path_params, upload, is_json)

    if kind == "json":
        return view(parse_json(raw))
    if kind == "media":  # audio bytes, or JSON naming a URL to fetch
        if content_type.split(";")[0].strip().lower() == "application/json":
            return view(parse_json(raw))
        if not raw:
            raise BadRequest("The request body must be the audio to transcribe, or JSON with a `url`.")
        return view({}, upload=len(raw), is_json=False)
    fields, upload = parse_form(raw, content_type)
    return view(fields, upload=upload, is_json=False)


def parse_form(raw: bytes, content_type: str) -> tuple[dict[str, Any], int]:
    """The text fields of a multipart/form-data body and the total size of its file parts.

    A field sent as "true"/"false" (how SDKs encode booleans in forms) becomes a bool;
    a name ending in `[]` collects a list."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest("The request body must be multipart/form-data.")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise BadRequest("The multipart/form-data body has no boundary.")
    delimiter = b"--" + (found.group(1) or found.group(2)).encode("latin-1")
    parts = raw.split(delimiter)
    if len(parts) < 3 or not parts[-1].startswith(b"--"):
        raise BadRequest("We could not parse the multipart/form-data body of your request.")
    fields: dict[str, Any] = {}
    upload = 0
    for part in parts[1:-1]:
        head, sep, value = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest("We could not parse the multipart/form-data body of your request.")
        value = value.removesuffix(b"\r\n")
        name = _DISPOSITION_NAME.search(head)
        if name is None:
            continue
        if b"filename=" in head.lower() or len(value) > _MAX_FIELD_BYTES:
            upload += len(value)
            continue
        key = name.group(1).decode("utf-8", "replace")
        text = value.decode("utf-8", "replace")
        item: Any = {"true": True, "false": False}.get(text, text)
        if key.endswith("[]"):
            fields.setdefault(key[:-2], []).append(item)
        else:
            fields[key] = item
    return fields, upload


async def read_raw(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"Request body is larger than this gateway's limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    receive = request.receive  # (read as Request.stream reads it, without its generator)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"Request body is larger than this gateway's limit of {limit} bytes.")
        if not message.get("more_body", False):
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)
