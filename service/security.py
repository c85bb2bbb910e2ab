"""Optional API keys: when `ANYMODAL_API_KEYS` is set, every route but health, readiness and
metrics needs `Authorization: Bearer <key>`, and so does every gRPC call but the health ones (as
`authorization` metadata)."""

from __future__ import annotations

import hmac

from anymodal.service.errors import ApiError
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="An API key from ANYMODAL_API_KEYS, when it is set")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    keys: list[str] = request.app.state.service.settings.api_keys
    check_api_key(keys, None if credentials is None else credentials.credentials)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None for no value or another scheme."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def check_api_key(keys: list[str], token: str | None) -> None:
    """Nothing when no keys are configured or `token` is one of them; else ApiError 401."""
    if not keys:
        return
    if token is None:
        raise ApiError(
            401,
            "this route needs an API key: send Authorization: Bearer <key>",
            "authorization",
            headers=CHALLENGE,
        )
    offered = token.encode()
    if not any(hmac.compare_digest(offered, key.encode()) for key in keys):
        raise ApiError(401, "the API key is not valid", "authorization", headers=CHALLENGE)
