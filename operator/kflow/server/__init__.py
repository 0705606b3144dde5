"""`kflow server`: the HTTP API (docs/API.md) over the Flow objects and the engine's reads."""

from kflow.server.main import run_server

__all__ = ["run_server"]
