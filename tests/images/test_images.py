"""The images install exactly uv.lock's versions, run as uid 65532, and the examples image
serves every handler examples/*.yaml names (images/README.md)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import Marker
from packaging.version import Version

from kflow.devkit.cluster import LocalCluster, run_script
from tests.images.support import Container, Image

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
NON_ROOT = "65532:65532"
EXAMPLES_IMAGE = "localhost/kflow-examples:dev"

# What pip installed (not Debian's own packages) and the environment markers evaluate against,
# both read inside the image.
INSPECT = """
import importlib.metadata, json, sysconfig
from pip._vendor.packaging.markers import default_environment
where = sysconfig.get_path("purelib")
print(json.dumps({
    "installed": {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()
                  if str(d.locate_file("")).startswith(where)},
    "where": where,
    "env": default_environment(),
}))
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_runtime_set(env: dict[str, str]) -> dict[str, Version]:
    """kflow's runtime dependencies as uv.lock pins them for `env`: its `dependencies` and its
    "fast" extra (uvloop), and theirs, following each edge whose marker holds; read from the
    lock itself, not from the export the build installs."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        packages.setdefault(canonical(package["name"]), []).append(package)

    def pick(dep: dict[str, Any]) -> dict[str, Any]:
        candidates = packages[canonical(dep["name"])]
        if "version" in dep:
            candidates = [p for p in candidates if p["version"] == dep["version"]]
        assert len(candidates) == 1, f"uv.lock: cannot tell which {dep} is meant"
        return candidates[0]

    found: dict[str, Version] = {}
    kflow = pick({"name": "kflow"})
    todo = [*kflow.get("dependencies", []), *kflow.get("optional-dependencies", {})["fast"]]
    while todo:
        dep = todo.pop()
        if "marker" in dep and not Marker(dep["marker"]).evaluate(env):
            continue
        package = pick(dep)
        edges = list(package.get("dependencies", []))
        for extra in dep.get("extra", []):
            edges += package.get("optional-dependencies", {}).get(extra, [])
        name = canonical(package["name"])
        if name not in found:
            found[name] = Version(package["version"])
            todo += edges
        elif dep.get("extra"):
            todo += edges
    return found


def inspect(container: Container) -> dict[str, Any]:
    return dict(json.loads(container.run("python3", "-c", INSPECT).stdout))


@pytest.mark.parametrize("name", ["runner", "operator"])
def test_installed_distributions_are_exactly_the_locked_ones(
    name: str, containers: dict[str, Container]
) -> None:
    seen = inspect(containers[name])
    expected = locked_runtime_set(seen["env"])
    installed = {canonical(n): Version(v) for n, v in seen["installed"].items()}
    kflow_version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert installed.pop("kflow") == Version(kflow_version)
    assert expected, "no runtime dependency found in uv.lock"
    assert {n: str(v) for n, v in installed.items()} == {n: str(v) for n, v in expected.items()}, (
        f"{name}: pip-installed distributions in {seen['where']} differ from uv.lock"
    )


@pytest.mark.parametrize("name", ["runner", "operator", "examples"])
def test_image_user_is_numeric_non_root(name: str, images: dict[str, Image],
                                        containers: dict[str, Container]) -> None:
    assert images[name].config.get("User") == NON_ROOT
    ids = containers[name].run("python3", "-c", "import os; print(os.getuid(), os.getgid())")
    assert ids.stdout.split() == ["65532", "65532"]


def test_runner_writes_its_termination_message_as_non_root(
    containers: dict[str, Container],
) -> None:
    """kflow-run (the entrypoint, as uid 65532) leaves its failure where the kubelet reads it;
    here a file in /tmp stands for /dev/termination-log."""
    runner = containers["runner"]
    path = "/tmp/termination-log"
    env = {"KFLOW_FLOW_UID": "f", "KFLOW_NODE": "n", "KFLOW_TOKEN": "t",
           "KFLOW_REDIS_URL": "redis://127.0.0.1:1/0", "KFLOW_TERMINATION_LOG": path}
    proc = runner.run("kflow-run", "no_such_module:handler", env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    message = runner.run("cat", path).stdout
    assert message.startswith("kflow-run: ") and "no_such_module" in message
    assert runner.run("stat", "-c", "%u", path).stdout.strip() == "65532"


def handler_specs() -> list[str]:
    """Every `module:function` the Queues of examples/*.yaml run, with their image."""
    specs = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "Queue":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert container["image"] == EXAMPLES_IMAGE, f"{path.name}: {container}"
                command = [*container.get("command", []), *container.get("args", [])]
                assert command[0] == "kflow-run", f"{path.name}: {command}"
                specs.append(command[1])
    return specs


def test_examples_image_serves_every_handler_the_examples_name(
    images: dict[str, Image], containers: dict[str, Container]
) -> None:
    specs = handler_specs()
    assert len(specs) >= 20
    assert images["examples"].ref_name == EXAMPLES_IMAGE
    assert images["examples"].config.get("Entrypoint") == ["kflow-run"]
    # -P: nothing added to sys.path by Python itself, so the lookup from the working directory
    # (/work) is kflow-run's own, as in a pod.
    check = (
        "import sys; from kflow.sdk.handlers import resolve_function\n"
        "for spec in sys.argv[1:]:\n"
        "    assert callable(resolve_function(spec)), spec\n"
        "import examples.handlers; print(examples.handlers.__file__)"
    )
    proc = containers["examples"].run("python3", "-P", "-c", check, *sorted(set(specs)))
    assert proc.stdout.strip() == "/work/examples/handlers.py"


def test_examples_image_runs_a_handler_in_the_cluster_under_restricted_rules(
    images: dict[str, Image], kube_cluster: LocalCluster, kube_namespace: str
) -> None:
    """In the local cluster, as the Queues of examples/*.yaml will run it: the image by the name
    they give, `runAsNonRoot` checked by the kubelet against the numeric USER, a read-only root
    file system, and the termination message written as uid 65532."""
    imported = run_script("import-images.sh")
    assert imported.returncode == 0, imported.stderr
    check = (
        "import os; from kflow.sdk.handlers import resolve_function\n"
        "from kflow.sdk.run import write_termination_message\n"
        "resolve_function('examples.handlers:process_payment')\n"
        "write_termination_message('/dev/termination-log', f'uid {os.getuid()}')"
    )
    kube_cluster.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "examples-image"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": EXAMPLES_IMAGE, "imagePullPolicy": "Never",
                "command": ["python3", "-P", "-c", check],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        }}},
    }, namespace=kube_namespace)

    def terminated() -> dict[str, Any] | None:
        pods = kube_cluster.get_json("pods", "-l", "job-name=examples-image",
                                     namespace=kube_namespace)["items"]
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses", []):
                if "terminated" in status.get("state", {}):
                    return dict(status["state"]["terminated"])
        return None

    state = kube_cluster.wait_until("the examples-image pod to finish", terminated, timeout=120)
    assert (state["exitCode"], state.get("message")) == (0, "uid 65532"), state
