"""Commands packed by hiredis (kflow.store.connect) are byte for byte what redis-py packs."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from kflow.store.connect import BoundedConnection


@pytest.mark.parametrize("args", [
    ("EVALSHA", "abc", 2, "{kflow:ns:uid}:meta", "{kflow:ns:uid}:state", "node", "é ✓",
     b"\x00\xff"),
    ("SET", "k", 1.5),
    ("SET", "k", -3),
    ("CONFIG GET", "maxmemory"),  # a two-word name is split
    (b"CLIENT SETNAME", "kflow"),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", ""),
])
def test_hiredis_packs_what_redis_py_packs(args: tuple[object, ...]) -> None:
    ours = BoundedConnection()
    theirs = Connection()
    assert b"".join(ours.pack_command(*args)) == b"".join(
        bytes(part) for part in theirs.pack_command(*args))


@pytest.mark.parametrize("bad", [True, None, object()])
def test_a_value_redis_cannot_take_is_a_data_error(bad: object) -> None:
    with pytest.raises(DataError):
        BoundedConnection().pack_command("SET", "k", bad)


def test_hiredis_is_installed_so_the_fast_path_is_the_one_tested() -> None:
    from kflow.store import connect
    assert connect._hiredis_pack is not None
