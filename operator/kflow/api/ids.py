"""Identities that cross layers as one typed value instead of strings built by hand."""

from __future__ import annotations

from functools import lru_cache


class QueueId(str):
    """A queue's identity in the engine and the store: `<namespace>/<name>`.

    A `str` (it is a Redis key part, a dict key and a log word as it is), built only from its
    two parts, so nobody formats or splits it by hand.
    """

    __slots__ = ()

    def __new__(cls, namespace: str, name: str) -> QueueId:
        if not namespace or "/" in namespace or not name or "/" in name:
            raise ValueError(f"a queue id needs a namespace and a name without '/': "
                             f"{namespace!r}, {name!r}")
        return super().__new__(cls, f"{namespace}/{name}")

    @classmethod
    def of(cls, namespace: str, name: str) -> QueueId:
        """`QueueId(namespace, name)`, remembered: the engine's hot paths build the same few
        ids for every node they queue or settle."""
        return _remembered(namespace, name)

    @classmethod
    def parse(cls, text: str) -> QueueId:
        """`ns/name` (as a user writes it on the command line) as a QueueId."""
        if isinstance(text, QueueId):
            return text
        namespace, _, name = text.partition("/")
        return cls(namespace, name)

    @property
    def namespace(self) -> str:
        return self.partition("/")[0]

    @property
    def name(self) -> str:
        return self.partition("/")[2]

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return self.namespace, self.name


@lru_cache(maxsize=4096)
def _remembered(namespace: str, name: str) -> QueueId:
    return QueueId(namespace, name)


class FlowId(str):
    """A flow's identity in the engine and the store: `<namespace>/<uid>`.

    The namespace is part of every flow key (`<prefix>:{<namespace>/<uid>}:…`), so a Redis ACL
    key pattern per namespace fences one team's flows from another's. The Kubernetes uid alone
    (`.uid`) is what labels and owner references carry.
    """

    __slots__ = ()

    def __new__(cls, namespace: str, uid: str) -> FlowId:
        if not namespace or "/" in namespace or not uid or "/" in uid:
            raise ValueError(f"a flow id needs a namespace and a uid without '/': "
                             f"{namespace!r}, {uid!r}")
        return super().__new__(cls, f"{namespace}/{uid}")

    @classmethod
    def of(cls, namespace: str, uid: str) -> FlowId:
        """`FlowId(namespace, uid)`, remembered: a queue's members name their flows by uid,
        and the engine turns the same few back into ids on every take."""
        return _remembered_flow(namespace, uid)

    @classmethod
    def parse(cls, text: str) -> FlowId:
        """`ns/uid` as a FlowId."""
        if isinstance(text, FlowId):
            return text
        namespace, _, uid = text.partition("/")
        return cls(namespace, uid)

    @property
    def namespace(self) -> str:
        return self.partition("/")[0]

    @property
    def uid(self) -> str:
        return self.partition("/")[2]

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return self.namespace, self.uid


@lru_cache(maxsize=4096)
def _remembered_flow(namespace: str, uid: str) -> FlowId:
    return FlowId(namespace, uid)
