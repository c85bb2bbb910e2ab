"""Reading request bodies: content types, base64 file payloads, body validation errors."""

from __future__ import annotations

from fastapi import Request
from pydantic import ValidationError

from service.decoding import InputError, decode_base64
from service.errors import ApiError, describe


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
