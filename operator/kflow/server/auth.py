"""Who calls and what RBAC lets them do: TokenReview and SubjectAccessReview, briefly cached.

The server acts with its own ServiceAccount, so it must check every request against the
caller's rights first: the same verb on flows.kflow.dev that `kubectl` would need.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

K = TypeVar("K")
V = TypeVar("V")

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


class TtlCache(Generic[K, V]):
    """Answers kept for `ttl` seconds, at most `max_entries` of them (the oldest go first)."""

    def __init__(self, ttl: float, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if self.clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self.clock() + self.ttl, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


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
        self.tokens: TtlCache[str, Caller] = TtlCache(token_ttl, max_entries, clock)
        self.access: TtlCache[AccessKey, tuple[bool, str]] = TtlCache(access_ttl, max_entries,
                                                                       clock)

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
        self.tokens.put(key, caller)
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
            self.access.put(key, answer)
        allowed, reason = answer
        if not allowed:
            because = f" ({reason})" if reason else ""
            raise Forbidden(f'user "{caller.username}" cannot {verb} resource "flows" in API '
                            f'group "kflow.dev" in the namespace "{namespace}"{because}')
