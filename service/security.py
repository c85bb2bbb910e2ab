"""Optional API keys: when `ANYMODAL_API_KEYS` is set, every route but health, readiness and
metrics needs `Authorization: Bearer <key>`."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="An API key from ANYMODAL_API_KEYS, when it is set")


async def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    keys: list[str] = request.app.state.service.settings.api_keys
    if not keys:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(
            401,
            "this route needs an API key: send Authorization: Bearer <key>",
            "authorization",
            headers=challenge,
        )
    offered = credentials.credentials.encode()
    if not any(hmac.compare_digest(offered, key.encode()) for key in keys):
        raise ApiError(401, "the API key is not valid", "authorization", headers=challenge)
