"""Handler registration and loading: @handler marks, HANDLERS dicts, files and modules."""

from __future__ import annotations

import asyncio
import functools
import textwrap
from pathlib import Path
from typing import Any

import pytest

from kflow.sdk import HandlerError, handler, load_handlers
from kflow.sdk.handlers import (
    format_error,
    handler_queue,
    is_async_handler,
    resolve_function,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_decorator_marks_and_keeps_the_function_callable() -> None:
    @handler("payment")
    def charge(job: Any) -> int:
        return 7

    assert handler_queue(charge) == "payment"
    assert charge(None) == 7


def test_decorator_needs_a_queue_name() -> None:
    with pytest.raises(HandlerError, match="needs a queue name"):
        handler("")


def test_load_from_file_collects_marked_functions_and_handlers_dict(tmp_path: Path) -> None:
    path = write(tmp_path, "my_handlers.py", """
        from kflow.sdk import handler

        @handler("extract")
        def extract(job):
            return 1

        def transform(job):
            return 2

        HANDLERS = {"transform": transform}
    """)
    found = load_handlers(path)
    assert sorted(found) == ["extract", "transform"]
    assert found["transform"](None) == 2


def test_a_handlers_file_can_import_its_neighbours(tmp_path: Path) -> None:
    write(tmp_path, "shared_util_for_kflow_test.py", "FACTOR = 3\n")
    path = write(tmp_path, "with_import.py", """
        from shared_util_for_kflow_test import FACTOR
        HANDLERS = {"q": lambda job: FACTOR}
    """)
    assert load_handlers(str(path))["q"](None) == 3


def test_two_handlers_for_one_queue_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.py", """
        from kflow.sdk import handler

        @handler("q")
        def one(job):
            return 1

        @handler("q")
        def two(job):
            return 2
    """)
    with pytest.raises(HandlerError, match="queue 'q' has two handlers"):
        load_handlers(path)


def test_a_module_without_handlers_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.py", "X = 1\n")
    with pytest.raises(HandlerError, match="registers no handler"):
        load_handlers(path)


def test_a_file_that_fails_on_import_names_the_file_and_error(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "raise RuntimeError('boom at import')\n")
    with pytest.raises(HandlerError, match=r"broken\.py.*RuntimeError.*boom at import"):
        load_handlers(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HandlerError, match="does not exist"):
        load_handlers(tmp_path / "nope.py")


def test_bad_handlers_dict_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.py", "HANDLERS = {'q': 42}\n")
    with pytest.raises(HandlerError, match=r"HANDLERS\['q'\] must map a queue name to a function"):
        load_handlers(path)


def test_load_by_dotted_module_name() -> None:
    found = load_handlers("examples.handlers")
    assert {"payment", "inventory", "shipping", "aggregator"} <= set(found)


def test_resolve_function_is_what_kflow_run_calls() -> None:
    fn = resolve_function("examples.handlers:process_payment")
    assert handler_queue(fn) == "payment"
    with pytest.raises(HandlerError, match="expected module:function"):
        resolve_function("examples.handlers")
    with pytest.raises(HandlerError, match="has no attribute 'nope'"):
        resolve_function("examples.handlers:nope")
    with pytest.raises(HandlerError, match="cannot import"):
        resolve_function("no_such_module_for_kflow:fn")


def test_async_detection_covers_functions_partials_and_callables() -> None:
    async def coro(job: Any) -> int:
        return 1

    def plain(job: Any) -> int:
        return 1

    class AsyncCallable:
        async def __call__(self, job: Any) -> int:
            return 1

    assert is_async_handler(coro)
    assert is_async_handler(functools.partial(coro))
    assert is_async_handler(AsyncCallable())
    assert not is_async_handler(plain)
    assert asyncio.iscoroutinefunction(coro)


def test_format_error_keeps_type_message_and_where_it_happened() -> None:
    def deep() -> None:
        raise KeyError("orderId")

    try:
        deep()
    except KeyError as exc:
        text = format_error(exc)
    assert text.startswith("KeyError: 'orderId'")
    assert "in deep" in text
    assert len(text.splitlines()) <= 7


def test_examples_handlers_cover_every_queue_of_every_example() -> None:
    from kflow.api import Flow, Queue, load_manifests
    from kflow.graph import compile_flow

    found = load_handlers(EXAMPLES / "handlers.py")
    for path in sorted(EXAMPLES.glob("*.yaml")):
        objects = load_manifests(path)
        flows = [o for o in objects if isinstance(o, Flow)]
        assert len(flows) == 1, path
        declared = {o.metadata.name for o in objects if isinstance(o, Queue)}
        used = {located.node.queue for located in flows[0].located_nodes()}
        exit_graph = compile_flow(flows[0]).on_exit  # exit handlers (spec.onExit) too
        used |= exit_graph.queues if exit_graph is not None else set()
        assert used <= set(found), (path, used - set(found))
        # A Queue may serve only nodes that running code adds (job.add_children).
        assert used <= declared <= set(found), (path, used - declared, declared - set(found))
        for queue in objects:
            if isinstance(queue, Queue):
                command = queue.spec.template["spec"]["containers"][0]["command"]
                assert command[0] == "kflow-run"
                assert handler_queue(resolve_function(command[1])) == queue.metadata.name


async def test_call_handler_runs_sync_in_a_thread_and_async_on_the_loop() -> None:
    import sys
    import threading

    from kflow.sdk.handlers import call_handler

    main = threading.get_ident()

    def sync(job: Any) -> int:
        return threading.get_ident()

    async def coro(job: Any) -> int:
        return threading.get_ident()

    def exits(job: Any) -> None:
        sys.exit(3)

    async def exits_async(job: Any) -> None:
        sys.exit(4)

    assert await call_handler(sync, None) != main
    assert await call_handler(coro, None) == main
    with pytest.raises(RuntimeError, match=r"raised SystemExit\(3\)"):
        await call_handler(exits, None)
    with pytest.raises(RuntimeError, match=r"raised SystemExit\(4\)"):
        await call_handler(exits_async, None)
    with pytest.raises(KeyError):
        await call_handler(lambda job: {}["x"], None)
