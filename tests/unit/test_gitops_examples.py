"""docs/gitops.md's worked repository (examples/gitops) holds together: the kustomization lists
every synced file, the Argo CD and Flux manifests point at that folder and check objects it
has, and every Flow made from the template (the backfill, the nightly runs, a one-off run)
expands and compiles. tests/e2e/installed/test_gitops_health.py applies it to a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kflow.api.cron import CronFlow
from kflow.api.manifests import parse_manifest
from kflow.api.models import Flow, FlowTemplate
from kflow.graph.compiler import compile_flow
from kflow.graph.templates import check_template, expand

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
PIPELINES = GITOPS / "pipelines"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def synced() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d
            for path in sorted(PIPELINES.glob("*.yaml")) if path.name != "kustomization.yaml"
            for d in documents(path)}


def test_the_kustomization_lists_every_synced_file() -> None:
    [kustomization] = documents(PIPELINES / "kustomization.yaml")
    files = {p.name for p in PIPELINES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_argo_cd_and_flux_sync_that_folder_and_flux_checks_objects_it_has() -> None:
    [app] = documents(GITOPS / "argocd" / "application.yaml")
    assert (ROOT / app["spec"]["source"]["path"]) == PIPELINES
    source, kustomization = documents(GITOPS / "flux" / "pipelines.yaml")
    assert kustomization["spec"]["sourceRef"]["name"] == source["metadata"]["name"]
    assert (ROOT / kustomization["spec"]["path"]).resolve() == PIPELINES
    objects = synced()
    for check in kustomization["spec"]["healthChecks"]:
        assert (check["kind"], check["name"]) in objects, check
        assert check["namespace"] == kustomization["spec"]["targetNamespace"]
        assert check["kind"] != "Flow", "a Flow is InProgress until its run ends"


def test_every_flow_made_from_the_template_expands_and_compiles() -> None:
    objects = synced()
    template = FlowTemplate.model_validate(objects["FlowTemplate", "etl"])
    check_template(template)
    cron = objects["CronFlow", "etl-nightly"]
    CronFlow.model_validate(cron)
    [adhoc] = documents(GITOPS / "runs" / "etl-adhoc.flow.yaml")
    assert "name" not in adhoc["metadata"] and adhoc["metadata"]["generateName"]
    nightly = {"apiVersion": cron["apiVersion"], "kind": "Flow",
               "metadata": {"name": "etl-nightly-29413140"}, "spec": cron["spec"]["flow"]["spec"]}
    for flow in (objects["Flow", "etl-backfill-2026-11"], nightly,
                 {**adhoc, "metadata": {"name": "etl-adhoc-x7k2p"}}):
        made = expand({**flow, "metadata": {**flow["metadata"], "namespace": "etl"}}, template)
        parsed = parse_manifest(made)
        assert isinstance(parsed, Flow)
        compiled = compile_flow(parsed)
        assert set(compiled.nodes) == {"extract", "transform", "load", "notify"}
        assert compiled.nodes["extract"].data["pipelineId"] == \
            flow["spec"]["templateRef"]["parameters"]["pipelineId"]
        assert isinstance(compiled.nodes["extract"].data["input"]["records"], list)
