"""Optional bearer-token auth. The token comes from an environment variable (on Kubernetes, set from a
Secret), is compared in constant time, and is never logged or echoed."""
from __future__ import annotations

import hmac
import os

from serve.errors import ServeError


class BearerAuth:
    def __init__(self, token: str | None):
        self._token = token.encode() if token else None

    @classmethod
    def from_env(cls, variable: str | None) -> "BearerAuth":
        """No variable configured: auth is off. Configured but unset or empty: refuse to start (fail closed)."""
        if variable is None:
            return cls(None)
        token = os.environ.get(variable, "")
        if not token:
            raise RuntimeError(f"auth_token_env is {variable!r} but that environment variable is unset or "
                               "empty; set it (e.g. from a Kubernetes Secret) or remove auth_token_env")
        return cls(token)

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check(self, authorization: str | None) -> None:
        """Raise a 401 unless `authorization` is `Bearer <the token>`."""
        if self._token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ServeError(401, "missing bearer token: send the header 'Authorization: Bearer <token>'",
                             headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise ServeError(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})

    def __repr__(self) -> str:  # never the token
        return f"BearerAuth(enabled={self.enabled})"
