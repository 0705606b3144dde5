"""Namespaces as Redis tenants: one ACL user per namespace that has Flows or Queues, its
credentials in that namespace's pods Secret, and a new password when the Secret asks for one.

The Secret is the record: its `password` (what pods read) and `previous-password` are the
user's only passwords, set again on every start, so a Redis that lost its ACLs (restarted
without an ACL file, a new cluster node) gets them back and a rotation holds across restarts.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kflow.store.acl import apply_tenant_user, check_admin, server_runs, tenant_user

log = logging.getLogger("kflow.kube")

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kflow"
# Set it to a new value (any) to have the operator make a new password; the previous one
# stays valid until the rotation after.
ANNOTATION_ROTATE = "kflow.dev/rotate-credentials"
ANNOTATION_ROTATED = "kflow.dev/rotated-credentials"  # the rotate value last acted on
PREVIOUS_PASSWORD_KEY = "previous-password"
REAPPLY_SECONDS = 60.0  # every user set again this often
RESTART_CHECK_SECONDS = 2.0  # and at once when a server restarted (its run_id changed)


class SecretApi(Protocol):
    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_secret(self, namespace: str, body: dict[str, Any]) -> bool: ...
    async def replace_secret(self, namespace: str, name: str, body: dict[str, Any]) -> None: ...


# Posts a Warning Event on an object (EventPoster.post_on without the keywords).
WarnFn = Callable[[dict[str, Any], str, str], Awaitable[None] | None]


class AclAdminMissing(RuntimeError):
    """The operator's Redis user may not keep other users: tenants cannot be turned on."""


@dataclass(frozen=True)
class SecretLayout:
    """The pods Secret: its name in each namespace and the keys pods read."""

    name: str
    url_key: str
    username_key: str
    password_key: str
    ca_key: str | None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else base64.b64decode(value).decode()


def new_password() -> str:
    return secrets.token_urlsafe(32)


def is_managed(secret: dict[str, Any]) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(LABEL_MANAGED_BY) == MANAGED_BY)


def rotation_asked(secret: dict[str, Any]) -> str | None:
    """The rotate annotation's value when it has not been acted on yet."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    wanted = annotations.get(ANNOTATION_ROTATE)
    return wanted if wanted and wanted != annotations.get(ANNOTATION_ROTATED) else None


class Tenants:
    """Keeps each served namespace's Redis user and pods Secret (settings.tenants on)."""

    def __init__(self, redis: Any, api: SecretApi, *, prefix: str, url: str,
                 layout: SecretLayout, warn: WarnFn, ca_pem: str | None = None) -> None:
        self._redis = redis
        self._api = api
        self._prefix = prefix
        self._url = url
        self._layout = layout
        self._warn = warn
        self._ca_pem = ca_pem
        self._ready: set[str] = set()  # namespaces whose user and Secret are in place
        self._foreign: set[str] = set()  # namespaces whose Secret kflow did not make
        self._locks: dict[str, asyncio.Lock] = {}

    async def check_admin(self) -> None:
        """Fail start with the fix when the operator's user may not run ACL SETUSER."""
        check = await check_admin(self._redis)
        if check.refusal is not None:
            raise AclAdminMissing(
                f"tenants are on (KFLOW_TENANTS_ENABLED, chart value tenants.enabled) but the "
                f"operator's Redis user {check.user!r} may not manage ACL users: "
                f"{check.refusal}. Give it the rights (e.g. `ACL SETUSER {check.user} "
                f"+@all ~* &*`, or use the `default` user), or turn tenants off.")

    async def ensure(self, namespace: str, involved: dict[str, Any]) -> None:
        """The namespace's user and Secret, made or brought up to date once per process run;
        `involved` (a Flow or Queue) gets the Event when the Secret is not kflow's."""
        if namespace in self._ready:
            return
        async with self._locks.setdefault(namespace, asyncio.Lock()):
            if namespace in self._ready:
                return
            await self._ensure(namespace, involved)
            self._ready.add(namespace)

    async def _ensure(self, namespace: str, involved: dict[str, Any]) -> None:
        secret = await self._api.read_secret(namespace, self._layout.name)
        if secret is None:
            password = new_password()
            await apply_tenant_user(self._redis, self._prefix, namespace, [password],
                                    replace_passwords=True)
            if await self._api.create_secret(namespace, self._body(namespace, password, None)):
                log.info("namespace %s: Redis user %s and Secret %s made", namespace,
                         tenant_user(self._prefix, namespace), self._layout.name)
                return
            secret = await self._api.read_secret(namespace, self._layout.name)  # raced
            if secret is None:
                raise RuntimeError(f"Secret {namespace}/{self._layout.name}: created by "
                                   "someone else and gone again; will retry")
        if not is_managed(secret):
            self._report_foreign(namespace, involved)
            return
        await self._apply(namespace, secret)
        if rotation_asked(secret):
            await self.rotate(namespace, secret)

    async def _apply(self, namespace: str, secret: dict[str, Any]) -> None:
        data = secret.get("data") or {}
        passwords = [p for p in (_unb64(data, self._layout.password_key),
                                 _unb64(data, PREVIOUS_PASSWORD_KEY)) if p]
        if not passwords:  # emptied by hand: a fresh password, written back
            await self.rotate(namespace, secret)
            return
        await apply_tenant_user(self._redis, self._prefix, namespace, passwords,
                                replace_passwords=True)

    def _report_foreign(self, namespace: str, involved: dict[str, Any]) -> None:
        if namespace in self._foreign:
            return
        self._foreign.add(namespace)
        name = self._layout.name
        message = (
            f"Secret {namespace}/{name} was not made by kflow (no label "
            f"{LABEL_MANAGED_BY}={MANAGED_BY}), so the operator leaves it as it is and this "
            f"namespace's pods reach Redis with its credentials instead of the namespace's "
            f"own Redis user {tenant_user(self._prefix, namespace)}. To fix: delete the Secret "
            f"(kflow makes its own), or name kflow's pods Secret differently "
            f"(chart value redis.podSecretName, KFLOW_REDIS_SECRET_NAME).")
        log.warning("%s", message)
        self._warn(involved, "ForeignRedisSecret", message)

    async def secret_changed(self, namespace: str, secret: dict[str, Any]) -> None:
        """A kflow-made pods Secret changed: rotate when its annotation asks."""
        if is_managed(secret) and rotation_asked(secret):
            async with self._locks.setdefault(namespace, asyncio.Lock()):
                fresh = await self._api.read_secret(namespace, self._layout.name)
                if fresh is not None and is_managed(fresh) and rotation_asked(fresh):
                    await self.rotate(namespace, fresh)

    async def rotate(self, namespace: str, secret: dict[str, Any]) -> None:
        """A new password; the current one stays valid until the next rotation, so running
        pods keep working. Redis first: a crash before the Secret is written only wastes a
        password that nobody got."""
        data = dict(secret.get("data") or {})
        current = _unb64(data, self._layout.password_key)
        password = new_password()
        await apply_tenant_user(self._redis, self._prefix, namespace,
                                [password, *([current] if current else [])],
                                replace_passwords=True)
        meta = secret.get("metadata") or {}
        annotations = dict(meta.get("annotations") or {})
        if annotations.get(ANNOTATION_ROTATE):
            annotations[ANNOTATION_ROTATED] = annotations[ANNOTATION_ROTATE]
        body = self._body(namespace, password, current, annotations=annotations)
        body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
        await self._api.replace_secret(namespace, self._layout.name, body)
        log.info("namespace %s: Redis password of %s rotated", namespace,
                 tenant_user(self._prefix, namespace))

    async def reapply_forever(self, interval: float = REAPPLY_SECONDS,
                              check: float = RESTART_CHECK_SECONDS) -> None:
        """Set every known namespace's user again now and then, and as soon as a server
        restarted: a Redis restarted without an ACL file, or a node added to the cluster,
        has lost them, and pods would be refused until then."""
        runs: tuple[str, ...] | None = None
        since = 0.0
        while True:
            await asyncio.sleep(check)
            since += check
            try:
                now = await server_runs(self._redis)
            except Exception as exc:  # Redis away: try again on the next round
                log.debug("reading the Redis servers' run ids failed: %s", exc)
                continue
            if now == runs and since < interval:
                continue
            if runs is not None and now != runs:
                log.info("a Redis server restarted: setting the namespaces' users again")
            runs, since = now, 0.0
            await self.reapply()

    async def reapply(self) -> None:
        """Set every known namespace's user again from its Secret; a Secret deleted (kflow's,
        or one it was told about and left alone) is made again."""
        for namespace in sorted(self._ready):
            try:
                secret = await self._api.read_secret(namespace, self._layout.name)
                if secret is None:
                    self._foreign.discard(namespace)
                    await self._ensure(namespace, {})
                elif is_managed(secret):
                    self._foreign.discard(namespace)
                    await self._apply(namespace, secret)
            except Exception as exc:
                log.warning("namespace %s: re-applying its Redis user failed: %s",
                            namespace, exc)

    def _body(self, namespace: str, password: str, previous: str | None, *,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
        layout = self._layout
        data = {layout.url_key: _b64(self._url),
                layout.username_key: _b64(tenant_user(self._prefix, namespace)),
                layout.password_key: _b64(password)}
        if previous:
            data[PREVIOUS_PASSWORD_KEY] = _b64(previous)
        if layout.ca_key and self._ca_pem:
            data[layout.ca_key] = _b64(self._ca_pem)
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": layout.name, "namespace": namespace,
                             "labels": {LABEL_MANAGED_BY: MANAGED_BY},
                             "annotations": annotations or {}},
                "data": data}
