"""Every Kubernetes API call of the operator gives up on a server that never answers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from kubernetes import client

from kflow.kube.k8s import API_TIMEOUT_S, KubeApi

# A hang guard far above the timeouts under test: only a call that never returns trips it.
HANG_GUARD_S = 60.0


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port whose connections are accepted by the kernel and then never answered, like an
    API server behind a cut network; yields the port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def _api(port: int, timeout: tuple[float, float]) -> KubeApi:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    return KubeApi(configuration=configuration, timeout=timeout)


async def test_a_call_to_an_api_server_that_never_answers_fails_instead_of_hanging(
        silent_server: int) -> None:
    api = _api(silent_server, (0.5, 0.5))
    with pytest.raises(Exception) as raised:
        await asyncio.wait_for(api.read_deployment("ns", "workers"), HANG_GUARD_S)
    assert "timed out" in str(raised.value).lower(), raised.value
    with pytest.raises(Exception, match=r"(?i)timed out"):
        await asyncio.wait_for(api.create_job("ns", {"metadata": {"name": "j"}}), HANG_GUARD_S)


def test_the_default_timeouts_bound_connect_and_read() -> None:
    connect, read = API_TIMEOUT_S
    assert 0 < connect <= 30 and 0 < read <= 120
    assert KubeApi(configuration=client.Configuration()).timeout == API_TIMEOUT_S
