"""Reading requests: request ids, content types, base64 file payloads, body validation errors."""

from __future__ import annotations

import re
import uuid

from anymodal.service.decoding import InputError, decode_base64
from anymodal.service.errors import ApiError, describe
from fastapi import Request
from pydantic import ValidationError

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(offered: str) -> str:
    """The client's request id (`X-Request-ID`, or gRPC's `x-request-id` metadata) when it is a
    sane one, else a new one: it ends up in logs and answers, so arbitrary text is not echoed."""
    return offered if REQUEST_ID.match(offered) else uuid.uuid4().hex


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def file_bytes(text: str, field: str) -> bytes | InputError:
    """Base64 to bytes; a bad encoding is an unusable input (rejected, or dropped on request)."""
    try:
        return decode_base64(text, field)
    except InputError as error:
        return error


def validation_error(error: ValidationError, status: int = 422) -> ApiError:
    """A pydantic error on a request body as a 4xx naming the fields: broken JSON is 400."""
    problems = error.errors(include_url=False)
    for problem in problems:
        if problem["type"] == "json_invalid":
            reason = problem.get("ctx", {}).get("error", "parse error")
            return ApiError(400, f"the body is not valid JSON ({reason})")
    message, field = describe(problems)
    return ApiError(status, message, field=field)
