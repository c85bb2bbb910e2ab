"""Reading requests: request ids, content types, base64 file payloads, body validation errors."""

from __future__ import annotations

import os
import random
import re

from anymodal.service.decoding import InputError, decode_base64
from anymodal.service.errors import ApiError, describe
from fastapi import Request
from pydantic import ValidationError

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _Ids:
    """Random 128-bit hex ids from a generator seeded from the OS once per process. `uuid4()` asks
    the OS on every call, and that system call hands the interpreter lock to whichever thread is
    running the pipeline: the event loop can then wait milliseconds for it, on every request. A
    request id needs to be unique, not secret."""

    def __init__(self) -> None:
        self._pid = 0
        self._generator = random.Random()

    def new(self) -> str:
        if self._pid != os.getpid():  # a forked worker must not repeat its parent's ids
            self._pid, self._generator = os.getpid(), random.Random(os.urandom(32))
        return f"{self._generator.getrandbits(128):032x}"


_IDS = _Ids()


def request_id(offered: str) -> str:
    """The client's request id (`X-Request-ID`, or gRPC's `x-request-id` metadata) when it is a
    sane one, else a new one: it ends up in logs and answers, so arbitrary text is not echoed."""
    return offered if REQUEST_ID.match(offered) else _IDS.new()


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
