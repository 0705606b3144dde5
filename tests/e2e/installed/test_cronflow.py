"""CronFlow on the local cluster (about 2.5 min with the install), kflow installed by its
chart with the cron clock 20 times faster (cron.timeScale: "every minute" comes every 3 s):
Forbid never lets two runs overlap and later runs still start, Replace deletes the running
one, history limits hold, suspend stops new runs, and a bad schedule is refused or reported
naming the field and the fix."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from kflow.api.cron import LABEL_CRONFLOW
from kflow.api.states import TERMINAL_PHASES
from kflow.devkit.checkout import REPO
from kflow.devkit.operator import JobWatch, Kube
from tests.e2e.installed.conftest import EXAMPLES_IMAGE, Installed, release, until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

API = "kflow.dev/v1alpha1"
SCALE = 20  # one scheduled minute: 3 real seconds
MINUTE_S = 60 / SCALE


@pytest.fixture(scope="module")
def installed(kube: Kube) -> Iterator[Installed]:
    # The chart's crds/ are installed only where missing: bring this CRD up to date first.
    kube("apply", "-f", str(REPO / "crds" / "cronflows.kflow.dev.yaml"))
    yield from release(kube, "--set", f"cron.timeScale={SCALE}")


def shell_queue(name: str, script: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Queue", "metadata": {"name": name},
            "spec": {"mode": "Job", "template": {"spec": {"containers": [
                {"name": "main", "image": EXAMPLES_IMAGE,
                 "command": ["/bin/sh", "-c", script]}]}}}}


def cronflow(name: str, queue: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "CronFlow", "metadata": {"name": name},
            "spec": {"schedule": "* * * * *", **spec,
                     "flow": {"metadata": {"labels": {"team": "e2e"}},
                              "spec": {"defaults": {"attempts": 1},
                                       "nodes": [{"name": "work", "queue": queue}]}}}}


def apply(installed: Installed, *docs: dict[str, Any], check: bool = True) -> Any:
    return installed.kube("-n", installed.flows, "apply", "-f", "-",
                          input="\n---\n".join(json.dumps(doc) for doc in docs), check=check)


def get(installed: Installed, what: str, *args: str) -> Any:
    return json.loads(installed.kube("-n", installed.flows, "get", what, *args,
                                     "-o", "json").stdout)


def runs_of(installed: Installed, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get(installed, "flows", "-l", f"{LABEL_CRONFLOW}={name}")[
        "items"]
    return found


def most_unfinished_at_once(watch: JobWatch, name: str) -> tuple[int, set[str]]:
    """Replaying the Flows watch in etcd order: the most runs of `name` not finished at one
    moment, and every run seen."""
    unfinished: set[str] = set()
    seen: set[str] = set()
    most = 0
    for kind, flow in watch.events:
        meta = flow["metadata"]
        if (meta.get("labels") or {}).get(LABEL_CRONFLOW) != name:
            continue
        seen.add(meta["name"])
        phase = (flow.get("status") or {}).get("phase")
        if kind == "DELETED" or phase in TERMINAL_PHASES:
            unfinished.discard(meta["name"])
        else:
            unfinished.add(meta["name"])
        most = max(most, len(unfinished))
    return most, seen


def condition(cron: dict[str, Any], ctype: str) -> dict[str, Any]:
    for found in (cron.get("status") or {}).get("conditions") or []:
        if found["type"] == ctype:
            return dict(found)
    return {}


def deleted_runs(watch: JobWatch, name: str) -> list[str]:
    return [flow["metadata"]["name"] for kind, flow in watch.events if kind == "DELETED"
            and (flow["metadata"].get("labels") or {}).get(LABEL_CRONFLOW) == name]


def test_forbid_never_overlaps_history_holds_and_suspend_stops(installed: Installed) -> None:
    # Each run takes 6 s, two scheduled minutes and more: Allow would overlap them.
    apply(installed, shell_queue("cf-slow", "sleep 6"),
          cronflow("forbid", "cf-slow", concurrencyPolicy="Forbid",
                   successfulFlowsHistoryLimit=2))
    watch = JobWatch(installed.kube, installed.flows, "flows")
    watch.start()
    try:
        # Two runs deleted by the history limit of 2: four have succeeded.
        until("four runs, the oldest two deleted", lambda: len(
            deleted_runs(watch, "forbid")) >= 2, timeout=300)
        most, seen = most_unfinished_at_once(watch, "forbid")
        assert most == 1, f"{most} runs were unfinished at once"
        assert len(seen) >= 4
        assert sorted(deleted_runs(watch, "forbid"))[:2] == sorted(seen)[:2]  # the oldest
        kept = [f for f in runs_of(installed, "forbid")
                if f.get("status", {}).get("phase") == "Succeeded"]
        assert len(kept) <= 2

        # A run's Flow: the contract's name, label, annotation and owner.
        cron = get(installed, "cronflow", "forbid")
        run = runs_of(installed, "forbid")[-1]
        scheduled = run["metadata"]["annotations"]["kflow.dev/scheduled-at"]
        assert scheduled.endswith(":00Z")
        unix_minutes = int(datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
                           .timestamp()) // 60
        assert run["metadata"]["name"] == f"forbid-{unix_minutes}"
        assert run["metadata"]["labels"] == {LABEL_CRONFLOW: "forbid", "team": "e2e"}
        owner = run["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "CronFlow", cron["metadata"]["uid"], True)
        assert cron["status"]["lastFlow"]["name"] in seen
        assert condition(cron, "Ready")["reason"] == "Scheduled"
        assert cron["status"]["observedGeneration"] == cron["metadata"]["generation"]

        # Suspend: Ready stays True (reason Suspended), no next time, and no new run.
        installed.kube("-n", installed.flows, "patch", "cronflow", "forbid", "--type=merge",
                       "-p", '{"spec": {"suspend": true}}')
        until("the CronFlow to report it is suspended", lambda: condition(
            get(installed, "cronflow", "forbid"), "Ready").get("reason") == "Suspended",
            timeout=60)
        until("its last run to finish and leave the active list", lambda: get(
            installed, "cronflow", "forbid")["status"]["active"] == [], timeout=60)
        assert all(f.get("status", {}).get("phase") in TERMINAL_PHASES
                   for f in runs_of(installed, "forbid"))
        assert "nextScheduleTime" not in get(installed, "cronflow", "forbid")["status"]
        _, before = most_unfinished_at_once(watch, "forbid")
        # Absence takes waiting: five scheduled minutes by the CronFlow's clock.
        time.sleep(5 * MINUTE_S)
        _, after = most_unfinished_at_once(watch, "forbid")
        assert after == before, f"started while suspended: {after - before}"
    finally:
        watch.stop()
        installed.kube("-n", installed.flows, "delete", "cronflow", "forbid", check=False)


def test_replace_deletes_the_unfinished_run_for_the_next(installed: Installed) -> None:
    # Runs of two scheduled minutes under Replace: each next time deletes the running one.
    apply(installed, shell_queue("cf-replaced", "sleep 6"),
          cronflow("replace", "cf-replaced", concurrencyPolicy="Replace"))
    watch = JobWatch(installed.kube, installed.flows, "flows")
    watch.start()
    try:
        until("two runs replaced", lambda: len(deleted_runs(watch, "replace")) >= 2,
              timeout=120)
        _, seen = most_unfinished_at_once(watch, "replace")
        assert len(seen) >= 3
        succeeded = {flow["metadata"]["name"] for _, flow in watch.events
                     if (flow.get("status") or {}).get("phase") == "Succeeded"}
        assert not succeeded & seen, f"ran to the end despite Replace: {succeeded & seen}"
        reasons = installed.kube("-n", installed.flows, "get", "events", "--field-selector",
                                 "involvedObject.name=replace", "-o",
                                 "jsonpath={.items[*].reason}").stdout.split()
        assert "Replaced" in reasons and "Scheduled" in reasons
    finally:
        watch.stop()
        installed.kube("-n", installed.flows, "delete", "cronflow", "replace", check=False)


def test_failed_runs_keep_only_the_failed_history_limit(installed: Installed) -> None:
    apply(installed, shell_queue("cf-fail", "exit 3"),
          cronflow("failing", "cf-fail", failedFlowsHistoryLimit=1))
    seen: set[str] = set()

    def three_failed_one_kept() -> bool:
        runs = runs_of(installed, "failing")
        seen.update(f["metadata"]["name"] for f in runs)
        failed = [f for f in runs if f.get("status", {}).get("phase") == "Failed"]
        return len(seen) >= 3 and len(failed) == 1

    until("three failed runs, one kept", three_failed_one_kept, timeout=240)
    cron = get(installed, "cronflow", "failing")
    assert cron["status"]["lastFlow"]["phase"] in {"Failed", "Pending", "Running"}
    assert "lastSuccessfulTime" not in cron["status"]
    installed.kube("-n", installed.flows, "delete", "cronflow", "failing")


def test_a_bad_cronflow_is_refused_or_stalled_naming_the_field(installed: Installed) -> None:
    # The schema refuses a negative limit at apply time.
    refused = apply(installed, cronflow("negative", "q", successfulFlowsHistoryLimit=-1),
                    check=False)
    assert refused.returncode != 0
    assert "spec.successfulFlowsHistoryLimit" in refused.stderr

    # A schedule croniter cannot read: refused by the webhook, or stored and Stalled.
    bad = apply(installed, cronflow("bad-schedule", "q", schedule="61 * * * *"), check=False)
    if bad.returncode != 0:
        assert "spec.schedule" in bad.stderr and "five fields" in bad.stderr
        return
    until("the bad schedule to be reported", lambda: condition(
        get(installed, "cronflow", "bad-schedule"), "Stalled").get("status") == "True",
        timeout=60)
    cron = get(installed, "cronflow", "bad-schedule")
    stalled = condition(cron, "Stalled")
    assert stalled["reason"] == "InvalidSchedule"
    assert "spec.schedule" in stalled["message"] and "five fields" in stalled["message"]
    assert condition(cron, "Ready")["status"] == "False"
    assert runs_of(installed, "bad-schedule") == []
