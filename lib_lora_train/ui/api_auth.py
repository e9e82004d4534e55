"""HTTP basic auth for the extension's API routes, honouring the WebUI's ``--api-auth user:pass[,user2:pass2]``.

The WebUI (v1.10.x, ``modules/api/api.py``) protects its own ``/sdapi`` routes this way but not routes that
extensions add to the app, so every router here gets this dependency when the flag is set.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials


def parse_credentials(spec: str | None) -> dict[str, str]:
    """``"alice:pw1,bob:pw2"`` -> {"alice": "pw1", "bob": "pw2"}; passwords may contain ':'."""
    table = {}
    for item in (spec or "").split(","):
        user, sep, password = item.strip().partition(":")
        if sep and user:
            table[user] = password
    return table


def basic_auth_dependency(spec: str | None) -> Callable | None:
    """A FastAPI dependency that checks basic-auth credentials against ``spec``; None when no auth is configured."""
    table = parse_credentials(spec)
    if not table:
        return None
    scheme = HTTPBasic()

    def check(credentials: HTTPBasicCredentials = Depends(scheme)) -> bool:
        expected = table.get(credentials.username)
        # compare_digest on both branches so that the time taken does not tell which users exist
        given = credentials.password.encode()
        ok = secrets.compare_digest(given, expected.encode() if expected is not None else given)
        if expected is None or not ok:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="Incorrect username or password",
                headers={"WWW-Authenticate": "Basic"},
            )
        return True

    return check
