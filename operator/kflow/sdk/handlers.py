"""Register node handlers per queue and load them from a module or a file."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from kflow.sdk.job import Job

# A handler takes the job and returns its JSON output, directly or through a coroutine.
Handler = Callable[["Job"], Any | Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])

_QUEUE_ATTR = "__kflow_queue__"
ERROR_TAIL_FRAMES = 3  # traceback frames kept with a failed attempt's error
ERROR_MAX_CHARS = 4_000


class HandlerError(ValueError):
    """A handlers module cannot be loaded or does not give one handler per queue."""


def handler(queue: str) -> Callable[[F], F]:
    """Mark a function as the handler of every node on `queue`.

    The function stays a plain function (it can still be called directly or named in
    `kflow-run module:function`); `load_handlers` finds it through the mark.
    """
    if not isinstance(queue, str) or not queue:
        raise HandlerError(f"@handler needs a queue name, got {queue!r}")

    def mark(fn: F) -> F:
        if not callable(fn):
            raise HandlerError(f"@handler({queue!r}) decorates {fn!r}, which is not callable")
        setattr(fn, _QUEUE_ATTR, queue)
        return fn

    return mark


def handler_queue(fn: Callable[..., Any]) -> str | None:
    """The queue `fn` was registered for with @handler, if any."""
    queue = getattr(fn, _QUEUE_ATTR, None)
    return queue if isinstance(queue, str) else None


def is_async_handler(fn: Callable[..., Any]) -> bool:
    """True when calling `fn` returns a coroutine (so it runs on the event loop, not a thread)."""
    target = fn.func if hasattr(fn, "func") else fn  # functools.partial
    call = getattr(target, "__call__", None)  # noqa: B004 (instances with async __call__)
    return inspect.iscoroutinefunction(target) or (
        call is not None and inspect.iscoroutinefunction(call)
    )


def _current_directory_on_path() -> None:
    """Put the current directory first on sys.path, as `python -m` does.

    A console script (`kflow`, `kflow-run`) starts with its own bin folder there instead, so
    `examples.handlers` run from the repository root would not be found.
    """
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_module(path_or_module: str | Path) -> ModuleType:
    """Import a handlers module from a file path (`examples/handlers.py`) or a dotted name."""
    text = str(path_or_module)
    looks_like_file = text.endswith(".py") or "/" in text or Path(text).is_file()
    if not looks_like_file:
        _current_directory_on_path()
        try:
            return importlib.import_module(text)
        except ImportError as exc:
            raise HandlerError(f"cannot import handlers module {text!r}: {exc}") from exc
    path = Path(text).resolve()
    if not path.is_file():
        raise HandlerError(f"handlers file {text!r} does not exist")
    # The file's folder goes on sys.path so a handlers file can import its neighbours.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"kflow_handlers_{path.stem}_{abs(hash(str(path))) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HandlerError(f"cannot load handlers file {text!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise HandlerError(
            f"handlers file {text!r} raised {type(exc).__name__} on import: {exc}"
        ) from exc
    return module


def handlers_of(module: ModuleType) -> dict[str, Handler]:
    """Collect a module's handlers: its `HANDLERS` dict and every @handler-marked function."""
    found: dict[str, Handler] = {}
    origin: dict[str, str] = {}
    declared = getattr(module, "HANDLERS", None)
    if declared is not None:
        if not isinstance(declared, Mapping):
            raise HandlerError(
                f"{module.__name__}.HANDLERS must be a dict of queue name -> function, "
                f"got {type(declared).__name__}"
            )
        for queue, fn in declared.items():
            if not isinstance(queue, str) or not callable(fn):
                raise HandlerError(
                    f"{module.__name__}.HANDLERS[{queue!r}] must map a queue name to a "
                    f"function, got {fn!r}"
                )
            found[queue] = fn
            origin[queue] = f"HANDLERS[{queue!r}]"
    for attr, value in vars(module).items():
        queue = handler_queue(value) if callable(value) else None
        if queue is None:
            continue
        if queue in found and found[queue] is not value:
            raise HandlerError(
                f"{module.__name__}: queue {queue!r} has two handlers, {origin[queue]} and "
                f"{attr}; keep one"
            )
        found[queue] = value
        origin[queue] = attr
    return found


def load_handlers(path_or_module: str | Path | ModuleType) -> dict[str, Handler]:
    """Load the handlers (queue name -> function) of a module, a dotted name or a .py file."""
    module = (
        path_or_module if isinstance(path_or_module, ModuleType) else import_module(path_or_module)
    )
    found = handlers_of(module)
    if not found:
        raise HandlerError(
            f"{getattr(module, '__file__', module.__name__)} registers no handler: decorate "
            f"functions with @kflow.sdk.handler('queue') or define HANDLERS = {{'queue': fn}}"
        )
    return found


def resolve_function(spec: str) -> Callable[..., Any]:
    """Resolve `module:function` (kflow-run's argument) to the function it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerError(
            f"expected module:function (e.g. examples.handlers:extract), got {spec!r}"
        )
    module = import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise HandlerError(f"{spec} is {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


def format_error(exc: BaseException) -> str:
    """The error a failed attempt records: type and message, then the handler's last frames.

    Frames of the machinery that called the handler (asyncio, the thread pool, kflow's own
    runners) are left out: the reader wants the line of their code that raised.
    """
    head = f"{type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _machinery(f.filename)]
    lines = [head]
    for frame in frames[-ERROR_TAIL_FRAMES:]:
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line.strip()}")
    return "\n".join(lines)[:ERROR_MAX_CHARS]


_KFLOW_DIR = str(Path(__file__).resolve().parents[1])
_MACHINERY = (
    f"{_KFLOW_DIR}/sdk/", f"{_KFLOW_DIR}/cli/", "/asyncio/", "/concurrent/futures/",
)


def _machinery(filename: str) -> bool:
    return any(part in filename for part in _MACHINERY)


async def call_handler(fn: Callable[..., Any], job: Job, *, is_async: bool | None = None
                       ) -> Any:
    """Run a handler: a coroutine function on the loop, a plain function in its own thread.

    The thread is a daemon: when a run is interrupted (SIGTERM, Ctrl-C, a failed flow) the
    process can exit without waiting for a handler that may never return, which the default
    executor behind `asyncio.to_thread` would wait for. `is_async`: `is_async_handler(fn)`
    when the caller knows it (a worker asks once, not per node).
    """
    if is_async_handler(fn) if is_async is None else is_async:
        try:
            value = await fn(job)
        except (SystemExit, KeyboardInterrupt) as exc:
            raise _as_failure(exc) from exc
    else:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(outcome: Any, error: BaseException | None) -> None:
            if future.done():  # cancelled meanwhile: nobody is waiting for this outcome
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(outcome)

        def work() -> None:
            try:
                outcome = fn(job)
            except Exception as exc:
                loop.call_soon_threadsafe(settle, None, exc)
            except BaseException as exc:  # sys.exit() in a handler fails the attempt, no more
                loop.call_soon_threadsafe(settle, None, _as_failure(exc))
            else:
                loop.call_soon_threadsafe(settle, outcome, None)

        name = f"kflow-handler-{getattr(job, 'name', '?')}"
        threading.Thread(target=work, name=name, daemon=True).start()
        value = await future
    if inspect.isawaitable(value):  # a plain function that returned a coroutine
        value = await value
    return value


def _as_failure(exc: BaseException) -> Exception:
    return RuntimeError(f"the handler raised {type(exc).__name__}({exc})")
