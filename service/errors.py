"""Errors a client can cause, and how each becomes a JSON answer.

Every client error is a 4xx naming the field at fault and the fix; the Open Inference Protocol
routes (`/v2/...`) answer `{"error": "..."}` exactly as the protocol says. Anything else is a bug:
it is logged with its traceback and answered 500 with the request id, never with internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from anymodal.service.decoding import InputError
from anymodal.service.predictor import InvalidInputs
from anymodal.service.repository import UnknownModel
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        errors: list[InputError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.errors = errors or []
        self.headers = headers


def documented(model: type, descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for OpenAPI: each error status with its body and meaning."""
    return {code: {"model": model, "description": text} for code, text in descriptions.items()}


def invalid_inputs(error: InvalidInputs) -> ApiError:
    first = error.errors[0]
    return ApiError(
        422, str(error), field=first.field if len(error.errors) == 1 else None, errors=error.errors
    )


def _is_v2(request: Request) -> bool:
    return request.url.path == "/v2" or request.url.path.startswith("/v2/")


def error_response(request: Request, error: ApiError) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    if _is_v2(request):
        body: dict = {"error": error.message}
    else:
        body = {"error": error.message, "field": error.field, "request_id": request_id}
        if len(error.errors) > 1:
            body["errors"] = [{"field": e.field, "message": e.message} for e in error.errors]
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def describe(problems: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """pydantic's validation errors as one message, each problem as `field: what is wrong`, and
    the first field at fault."""
    described = []
    for problem in problems:
        location = [str(part) for part in problem.get("loc", ()) if part != "body"]
        described.append((".".join(location) or "body", problem.get("msg", "is invalid")))
    message = "; ".join(f"{field}: {text}" for field, text in described[:10])
    return message or "the request body is invalid", described[0][0] if described else None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return error_response(request, ApiError(400 if _is_v2(request) else 422, str(exc), field=exc.field))

    @app.exception_handler(InvalidInputs)
    async def _invalid_inputs(request: Request, exc: InvalidInputs) -> JSONResponse:
        return error_response(request, invalid_inputs(exc))

    @app.exception_handler(UnknownModel)
    async def _unknown_model(request: Request, exc: UnknownModel) -> JSONResponse:
        return error_response(request, ApiError(404, str(exc), field="model"))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = describe(exc.errors())
        return error_response(request, ApiError(400 if _is_v2(request) else 422, message, field=field))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.detail else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(
            request, ApiError(exc.status_code, message, headers=getattr(exc, "headers", None))
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.exception(
            "internal error answering %s %s (request %s)", request.method, request.url.path, request_id
        )
        return error_response(
            request, ApiError(500, f"internal error; report request id {request_id} to the operator")
        )
