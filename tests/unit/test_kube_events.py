"""Events aggregated like client-go's recorder: the same Event again raises its count, a burst
is a create and few patches, many different messages of one reason are combined, memory is
bounded. Against an API double that keeps Event objects as the API server would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kflow.kube.events import COMBINED_PREFIX, EventPoster, FlowEvent


@dataclass
class EventStore:
    """Event objects by name, and every call made."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail_creates: int = 0

    async def create_event(self, involved: dict[str, Any], *, type: str, reason: str,
                           message: str, component: str, instance: str, count: int,
                           first: str, last: str) -> str:
        self.calls.append("create")
        if self.fail_creates:
            self.fail_creates -= 1
            raise RuntimeError("API server unreachable")
        name = f"{involved['name']}.{len(self.objects)}"
        self.objects[name] = {"involvedObject": involved, "type": type, "reason": reason,
                              "message": message, "count": count, "firstTimestamp": first,
                              "lastTimestamp": last, "source": component}
        return name

    async def patch_event(self, namespace: str, name: str, *, count: int, last: str,
                          message: str) -> bool:
        self.calls.append("patch")
        if name not in self.objects:
            return False
        self.objects[name].update(count=count, lastTimestamp=last, message=message)
        return True

    def by_message(self) -> dict[str, int]:
        return {e["message"]: e["count"] for e in self.objects.values()}


def flow_event(message: str, reason: str = "NodeFailed", uid: str = "u-1") -> FlowEvent:
    return FlowEvent(uid, "etl", "orders", reason, message, warning=True)


async def test_a_burst_of_one_event_is_one_object_with_the_exact_count() -> None:
    api = EventStore()
    poster = EventPoster(api, identity="op", interval=0.01)

    for _ in range(500):
        poster.post(flow_event('node "load" failed: timeout'))
    await poster.drain()

    assert api.by_message() == {'node "load" failed: timeout': 500}
    assert api.calls.count("create") == 1 and len(api.calls) <= 2


async def test_the_same_event_later_patches_the_object_it_made() -> None:
    api = EventStore()
    poster = EventPoster(api, identity="op", interval=0.01)

    for _ in range(3):
        poster.post(flow_event("flow failed"))
        await poster.drain()

    [event] = api.objects.values()
    assert event["count"] == 3 and api.calls == ["create", "patch", "patch"]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Flow"


async def test_different_messages_reasons_and_objects_are_separate_events() -> None:
    api = EventStore()
    poster = EventPoster(api, identity="op", interval=0.01)

    poster.post(flow_event("a"))
    poster.post(flow_event("b"))
    poster.post(flow_event("a", reason="FlowFailed"))
    poster.post(flow_event("a", uid="u-2"))
    poster.post(flow_event("a"))
    await poster.drain()

    assert sorted((e["reason"], e["message"], e["involvedObject"]["uid"], e["count"])
                  for e in api.objects.values()) == [
        ("FlowFailed", "a", "u-1", 1), ("NodeFailed", "a", "u-1", 2),
        ("NodeFailed", "a", "u-2", 1), ("NodeFailed", "b", "u-1", 1)]


async def test_many_different_messages_of_one_reason_share_one_combined_event() -> None:
    api = EventStore()
    poster = EventPoster(api, identity="op", interval=0.01, similar_limit=10)

    for i in range(1000):
        poster.post(flow_event(f'node "n-{i}" failed'))
    await poster.drain()

    assert len(api.objects) == 11
    combined = [e for e in api.objects.values() if e["message"].startswith(COMBINED_PREFIX)]
    assert [e["count"] for e in combined] == [990]
    assert combined[0]["message"] == COMBINED_PREFIX + 'node "n-999" failed'
    # A message already seen in the window keeps its own Event.
    poster.post(flow_event('node "n-3" failed'))
    await poster.drain()
    assert api.by_message()['node "n-3" failed'] == 2


async def test_an_expired_event_is_made_again_with_the_count_so_far() -> None:
    api = EventStore()
    poster = EventPoster(api, identity="op", interval=0.01)
    poster.post(flow_event("x"))
    await poster.drain()
    api.objects.clear()  # the API server's event TTL passed

    poster.post(flow_event("x"))
    await poster.drain()

    assert api.calls == ["create", "patch", "create"]
    assert api.by_message() == {"x": 2}


async def test_a_failed_write_is_retried_by_the_next_post_with_the_full_count() -> None:
    api = EventStore(fail_creates=1)
    poster = EventPoster(api, identity="op", interval=0.01)
    task = poster.post_on({"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "etl",
                           "uid": "p-1"}, reason="Odd", message="m", warning=False)
    await task  # never raises
    assert api.objects == {}

    poster.post_on({"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "etl",
                    "uid": "p-1"}, reason="Odd", message="m", warning=False)
    await poster.drain()

    [event] = api.objects.values()
    assert event["count"] == 2 and event["type"] == "Normal"


async def test_memory_is_bounded_by_the_cache_size() -> None:
    api = EventStore()
    poster = EventPoster(api, identity="op", interval=0.01, cache_size=8)

    for i in range(100):
        poster.post(flow_event("same", uid=f"u-{i}"))
    await poster.drain()

    assert len(api.objects) == 100
    assert poster.cached() <= 2 * 8  # the aggregated Events and the similar-message windows
    # The oldest key left the cache: its Event again is a new object (as in client-go).
    poster.post(flow_event("same", uid="u-0"))
    await poster.drain()
    assert len(api.objects) == 101


async def test_a_long_message_is_cut_to_what_the_api_server_takes() -> None:
    api = EventStore()
    poster = EventPoster(api, identity="op", interval=0.01)
    poster.post(flow_event("x" * 5000))
    await poster.drain()
    [event] = api.objects.values()
    assert len(event["message"]) == 1024
