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
