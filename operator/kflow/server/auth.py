"""Who calls and what RBAC lets them do: TokenReview and SubjectAccessReview, briefly cached.

The server acts with its own ServiceAccount, so it must check every request against the
caller's rights first: the same verb on flows.kflow.dev that `kubectl` would need.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

FLOWS = "flows"  # the resource every request is checked on (group kflow.dev)


class Unauthorized(Exception):
    """No token, or one the API server does not accept (401)."""


class Forbidden(Exception):
    """RBAC does not let the caller do this (403)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated user, as the API server's TokenReview named them."""

    username: str
    uid: str | None
    groups: tuple[str, ...]
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_review(cls, user: Mapping[str, Any]) -> Caller:
        extra = user.get("extra") or {}
        return cls(username=str(user.get("username") or ""), uid=user.get("uid") or None,
                   groups=tuple(str(g) for g in user.get("groups") or ()),
                   extra=tuple(sorted((str(k), tuple(str(x) for x in v))
                                      for k, v in extra.items())))


def token_key(token: str) -> str:
    """What the token cache is keyed by: the token's SHA-256, so no token is kept in memory
    longer than its request."""
    return hashlib.sha256(token.encode()).hexdigest()


class ReviewApi(Protocol):
    """The two API server calls the gatekeeper needs (kflow.kube.k8s.KubeApi has them)."""

    async def review_token(self, token: str) -> dict[str, Any]: ...

    async def review_access(self, *, user: str, groups: list[str], uid: str | None,
                            extra: dict[str, list[str]], verb: str, namespace: str,
                            resource: str) -> tuple[bool, str]: ...


AccessKey = tuple[Caller, str, str]  # (caller, verb, namespace)


class Gatekeeper:
    """Authenticates tokens and authorizes (caller, verb, namespace) with the API server."""

    def __init__(self, api: ReviewApi, *, token_ttl: float, access_ttl: float,
                 max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        # ttl 0: nothing kept, every request asks the API server.
        self.tokens: TTLCache[str, Caller] = TTLCache(max_entries, token_ttl, timer=clock)
        self.access: TTLCache[AccessKey, tuple[bool, str]] = TTLCache(max_entries, access_ttl,
                                                                       timer=clock)

    async def authenticate(self, token: str | None) -> Caller:
        if not token:
            raise Unauthorized("no token: send your Kubernetes bearer token in the "
                               "X-Kflow-Token header (Authorization: Bearer when you reach "
                               "the server directly)")
        key = token_key(token)
        caller = self.tokens.get(key)
        if caller is not None:
            return caller
        status = await self.api.review_token(token)
        user = status.get("user") or {}
        if not status.get("authenticated") or not user.get("username"):
            reason = status.get("error") or "the API server did not accept it"
            raise Unauthorized(f"token refused: {reason}")
        caller = Caller.from_review(user)
        self.tokens[key] = caller
        return caller

    async def authorize(self, caller: Caller, verb: str, namespace: str) -> None:
        """Raise Forbidden unless RBAC lets the caller `verb` flows in `namespace`."""
        key = (caller, verb, namespace)
        answer = self.access.get(key)
        if answer is None:
            answer = await self.api.review_access(
                user=caller.username, groups=list(caller.groups), uid=caller.uid,
                extra={k: list(v) for k, v in caller.extra}, verb=verb, namespace=namespace,
                resource=FLOWS)
            self.access[key] = answer
        allowed, reason = answer
        if not allowed:
            because = f" ({reason})" if reason else ""
            raise Forbidden(f'user "{caller.username}" cannot {verb} resource "flows" in API '
                            f'group "kflow.dev" in the namespace "{namespace}"{because}')
