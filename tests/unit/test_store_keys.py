"""Flow key names: one hash tag per flow, cached, and never made from a bare string."""

from __future__ import annotations

import pytest

from kflow.api.ids import FlowId
from kflow.store.keys import FLOW_KEY_NAMES, flow_keys


def test_every_key_of_a_flow_carries_its_namespace_and_uid_as_one_hash_tag() -> None:
    keys = flow_keys("kflow", FlowId.of("team-a", "u1"))
    assert len(keys.all) == len(FLOW_KEY_NAMES)
    assert all(key.startswith("kflow:{team-a/u1}:") for key in keys.all)
    assert keys.meta == "kflow:{team-a/u1}:meta"


def test_the_keys_are_built_once_per_flow() -> None:
    flow = FlowId.of("team-a", "u2")
    assert flow_keys("kflow", flow) is flow_keys("kflow", FlowId.of("team-a", "u2"))
    assert flow_keys("other", flow).meta == "other:{team-a/u2}:meta"


def test_a_bare_string_is_refused_even_when_an_equal_flow_id_was_asked_for_first() -> None:
    flow = FlowId.of("team-a", "u3")
    flow_keys("kflow", flow)
    with pytest.raises(TypeError, match="need a FlowId"):
        flow_keys("kflow", str(flow))


def test_a_flow_id_that_would_break_the_hash_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        flow_keys("kflow", FlowId.of("team-a", "u}4"))
