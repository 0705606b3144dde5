"""The CRDs in crds/ are exactly what the models generate, structural, and agree with the models."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kflow.api import crdgen, load_manifests

ROOT = Path(__file__).resolve().parents[2]


def checked_in(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "crds" / name).read_text())
    return data


def root_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    stack = [(path, schema)]
    while stack:
        here, node = stack.pop()
        yield here, node
        for name, sub in node.get("properties", {}).items():
            stack.append((f"{here}.{name}", sub))
        if "items" in node:
            stack.append((f"{here}[]", node["items"]))
        if isinstance(node.get("additionalProperties"), dict):
            stack.append((f"{here}{{}}", node["additionalProperties"]))


def test_checked_in_crds_match_the_models() -> None:
    problems = crdgen.check(ROOT / "crds")
    assert problems == [], "\n".join(problems) + "\nrun: python -m kflow.api.crdgen"


def test_check_reports_drift(tmp_path: Path) -> None:
    crdgen.write(tmp_path)
    assert crdgen.check(tmp_path) == []
    path = tmp_path / "flows.kflow.dev.yaml"
    path.write_text(path.read_text().replace("minimum: 1", "minimum: 0", 1))
    assert crdgen.main(["--check", "--dir", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", ["flows.kflow.dev.yaml", "queues.kflow.dev.yaml"])
def test_schemas_are_structural(name: str) -> None:
    for path, node in walk(root_schema(checked_in(name))):
        assert not {"$ref", "title", "default", "const", "$defs", "oneOf", "allOf"} & set(node), (
            path
        )
        assert node.get("additionalProperties") is not False, path
        assert not any(key.startswith("x-kflow-") for key in node), path
        if "anyOf" in node:
            # Only the int-or-string form, with no type or description inside the branches.
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        has_type = "type" in node
        untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert has_type or untyped_ok, f"{path} has no type"
        if path not in ("", ".metadata") and not path.endswith("[]"):
            assert node.get("description"), f"{path} lacks a description"


def test_flow_crd_shape() -> None:
    crd = checked_in("flows.kflow.dev.yaml")
    assert crd["metadata"]["name"] == "flows.kflow.dev"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "Flow",
        "flows",
        ["fl"],
        ["kflow"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns[:4] == ["PHASE", "PROGRESS", "DURATION", "AGE"]
    spec = root_schema(crd)["properties"]["spec"]
    node = spec["properties"]["nodes"]["items"]
    assert node["properties"]["data"] == {
        "description": node["properties"]["data"]["description"],
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert node["properties"]["children"]["items"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert spec["properties"]["nodes"]["x-kubernetes-list-map-keys"] == ["name"]
    opts = node["properties"]["opts"]["properties"]
    assert opts["attempts"]["minimum"] == 1
    assert opts["priority"]["maximum"] == 2_097_151
    assert opts["onFailure"]["enum"] == ["failParent", "ignore", "remove", "continueParent"]
    assert opts["delay"]["x-kubernetes-int-or-string"] is True
    rules = {rule.get("fieldPath"): rule["rule"] for rule in spec["x-kubernetes-validations"]}
    # Each field that shapes a run keeps its value unless changePolicy lets a change start a
    # new run.
    for field in ("nodes", "templateRef", "defaults", "ttlSecondsAfterFinished", "notify"):
        assert f"self.{field} == oldSelf.{field}" in rules[f".{field}"]
        assert "self.changePolicy != 'Reject'" in rules[f".{field}"]
    assert "has(self.nodes) != has(self.templateRef)" in rules[None]
    status = root_schema(crd)["properties"]["status"]["properties"]
    assert status["firstFailures"]["maxItems"] == 10


def test_queue_crd_shape() -> None:
    crd = checked_in("queues.kflow.dev.yaml")
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == ("Queue", ["kq"], ["kflow"])
    version = crd["spec"]["versions"][0]
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns[:4] == ["MODE", "WAITING", "ACTIVE", "WORKERS"]
    spec = root_schema(crd)["properties"]["spec"]
    assert spec["properties"]["mode"]["enum"] == ["Job", "Worker"]
    assert any("has(self.workers)" in rule["rule"] for rule in spec["x-kubernetes-validations"])


@pytest.mark.parametrize("name", ["flows.kflow.dev.yaml", "queues.kflow.dev.yaml"])
def test_cel_rules_name_only_fields_that_exist(name: str) -> None:
    for path, node in walk(root_schema(checked_in(name))):
        for rule in node.get("x-kubernetes-validations", []):
            fields = set(re.findall(r"(?:self|oldSelf)\.(\w+)", rule["rule"]))
            assert fields, rule
            missing = fields - set(node.get("properties", {}))
            assert not missing, f"{path}: rule {rule['rule']!r} uses unknown {missing}"
            assert rule["message"], rule
            if "fieldPath" in rule:
                assert rule["fieldPath"].lstrip(".") in node["properties"], rule


def conforms(value: Any, schema: dict[str, Any]) -> list[str]:
    """A small checker for the schema features the CRDs use (the apiserver test does the rest)."""
    problems: list[str] = []
    stack: list[tuple[str, Any, dict[str, Any]]] = [("", value, schema)]
    while stack:
        path, item, node = stack.pop()
        wrong_scalar = not isinstance(item, int | str) or isinstance(item, bool)
        if node.get("x-kubernetes-int-or-string") and wrong_scalar:
            problems.append(f"{path}: not int-or-string")
        kind = node.get("type")
        python = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
        if kind in python and not isinstance(item, python[kind]):
            problems.append(f"{path}: not {kind}")
            continue
        if "enum" in node and item not in node["enum"]:
            problems.append(f"{path}: not in enum")
        number = isinstance(item, int) and not isinstance(item, bool)
        if number and not node.get("minimum", item) <= item <= node.get("maximum", item):
            problems.append(f"{path}: out of range")
        if isinstance(item, str) and "pattern" in node and not re.search(node["pattern"], item):
            problems.append(f"{path}: pattern")
        if isinstance(item, dict) and "properties" in node:
            for required in node.get("required", []):
                if required not in item:
                    problems.append(f"{path}.{required}: required")
            for key, sub in item.items():
                if key in node["properties"]:
                    stack.append((f"{path}.{key}", sub, node["properties"][key]))
        if isinstance(item, list) and "items" in node:
            stack.extend((f"{path}[{i}]", sub, node["items"]) for i, sub in enumerate(item))
    return problems


def test_examples_conform_to_the_crds() -> None:
    schemas = {
        "Flow": root_schema(checked_in("flows.kflow.dev.yaml")),
        "Queue": root_schema(checked_in("queues.kflow.dev.yaml")),
    }
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    if not examples:
        pytest.skip("no examples/ in this checkout")
    for path in examples:
        for obj in load_manifests(path):
            doc = obj.model_dump(by_alias=True, exclude_none=True, mode="json")
            doc.pop("status", None)
            # Durations were parsed to ms; both forms are valid int-or-string values.
            assert conforms(doc, schemas[obj.kind]) == [], path
    bad = {
        "apiVersion": "kflow.dev/v1alpha1",
        "kind": "Flow",
        "spec": {
            "nodes": [
                {"name": "a", "queue": "Q", "opts": {"attempts": 0, "onFailure": "x", "delay": 1.5}}
            ]
        },
    }
    assert sorted(conforms(bad, schemas["Flow"])) == [
        ".spec.nodes[0].opts.attempts: out of range",
        ".spec.nodes[0].opts.delay: not int-or-string",
        ".spec.nodes[0].opts.onFailure: not in enum",
        ".spec.nodes[0].queue: pattern",
    ]


def test_cel_rules_of_a_node_name_the_node_in_their_message() -> None:
    node = root_schema(checked_in("flows.kflow.dev.yaml"))["properties"]["spec"]["properties"][
        "nodes"]["items"]
    rules = node["x-kubernetes-validations"]
    assert len(rules) == 2 and "x-kubernetes-validations" not in node["properties"]["opts"]
    for rule in rules:
        assert rule["rule"].startswith("!has(self.opts) || (")
        assert rule["messageExpression"].startswith("'node \"' + self.name + '\": ")
        assert rule["message"] in rule["messageExpression"]
        assert rule["fieldPath"] == ".opts"
