"""A parent of thousands of children reads their values a page at a time (no script call
walks them all), and gets exactly what a narrow parent gets: values, ignored, failed."""

from __future__ import annotations

from typing import Any

from kflow.engine import Engine
from tests.integration.engine_kit import build, new_ref, node, run_flow

WIDTH = 3000  # 3,000 names of 10 characters: a children list over inputs.lua's 32 KiB


async def test_a_wide_parent_reads_values_ignored_failures_and_a_maps_list_in_pages(
        engine: Engine) -> None:
    leaves = [node(f"leaf-{i:05d}", data={"i": i},
                   on_failure="ignore" if i % 1000 == 7 else "failParent")
              for i in range(WIDTH)]
    ref = new_ref()
    assert await engine.submit(ref, build(node("sum", *(n.name for n in leaves), queue="agg"),
                                          *leaves))
    stored = await engine.store.redis.hstrlen(engine.store.flow(ref.id).children, "sum")
    assert stored > 32768  # the paged path is the one under test

    def leaf(attempt: Any, values: Any) -> Any:
        if attempt.data["i"] % 1000 == 7:
            raise RuntimeError(f"bad leaf {attempt.data['i']}")
        return attempt.data["i"]

    run = await run_flow(engine, ref.id, {"work", "agg"}, {"sum": lambda a, v: len(v)},
                         default=leaf)
    assert (await engine.snapshot(ref.id)).phase == "Succeeded"
    seen = run.seen_children["sum"]
    assert len(seen) == WIDTH - 3 and seen["leaf-00042"] == 42
    [(values, ignored, failed)] = await engine.inputs_many(ref.id, ["sum"])
    assert values == seen
    assert ignored == {f"leaf-{i:05d}": f"bad leaf {i}" for i in (7, 1007, 2007)}
    assert failed == {}
    # The script left the children to the engine instead of walking 3,000 of them.
    [reply] = await engine.store.inputs([(ref.id, ["sum"])])
    assert not isinstance(reply, BaseException)
    [row] = reply
    assert row.paged and row.values == [] and row.ignored == []
