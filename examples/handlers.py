"""Handlers for every example flow, one per queue; sync and async handlers both work.

`kflow run --local FLOW.yaml --handlers examples/handlers.py` finds them by their
@handler("queue") mark; in a cluster, `kflow-run examples.handlers:<function>` runs one.
Each handler gets a `job` and returns the node's output (JSON).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kflow.sdk import Job, handler


class TransientError(RuntimeError):
    """A failure worth retrying (a timeout, a 503)."""


class CardDeclined(RuntimeError):
    """The bank refused the charge; retrying will not help."""


def only_child_value(job: Job) -> Any:
    """The value of a node's single child (a chain stage reads the stage before it)."""
    values = list(job.children_values().values())
    if len(values) != 1:
        raise ValueError(f"{job.name} expects exactly one child value, got {len(values)}")
    return values[0]


# --- ETL chain: extract -> transform -> load -> notify -----------------------------------------


@handler("pipeline-extract")
def extract(job: Job) -> dict[str, Any]:
    records = job.data["input"]["records"]
    job.log(f"extracted {len(records)} records for {job.data['pipelineId']}")
    return {"records": records, "count": len(records)}


@handler("pipeline-transform")
def transform(job: Job) -> dict[str, Any]:
    extracted = only_child_value(job)
    records = [
        {
            "id": record["id"],
            "customer": " ".join(record["customer"].split()).title(),
            "amountCents": round(float(record["amount"]) * 100),
        }
        for record in extracted["records"]
    ]
    return {"records": records, "count": len(records)}


@handler("pipeline-load")
async def load(job: Job) -> dict[str, Any]:
    transformed = only_child_value(job)
    for done, _ in enumerate(transformed["records"], start=1):
        await asyncio.sleep(0.01)  # one insert per record
        job.update_progress(round(100 * done / transformed["count"]))
    return {
        "loaded": transformed["count"],
        "totalCents": sum(r["amountCents"] for r in transformed["records"]),
    }


@handler("pipeline-notify")
def notify(job: Job) -> dict[str, Any]:
    loaded = only_child_value(job)
    job.log(f"pipeline {job.data['pipelineId']} loaded {loaded['loaded']} records")
    return {"pipelineId": job.data["pipelineId"], "success": True, **loaded}


# --- fan-out / aggregate ----------------------------------------------------------------------


@handler("item-processor")
async def process_item(job: Job) -> dict[str, Any]:
    await asyncio.sleep(0.02)
    item = job.data["item"]
    return {"index": job.data["index"], "result": item * item, "success": True}


@handler("aggregator")
def aggregate_results(job: Job) -> dict[str, Any]:
    results = sorted(job.children_values().values(), key=lambda r: r["index"])
    successful = [r for r in results if r["success"]]
    return {
        "batchId": job.data["batchId"],
        "totalItems": job.data["totalItems"],
        "successful": len(successful),
        "failed": len(results) - len(successful),
        "results": [r["result"] for r in results],
        "sum": sum(r["result"] for r in successful),
    }


# --- map over a node's output: list the files, process each one, merge -------------------------


@handler("file-lister")
def list_files(job: Job) -> dict[str, Any]:
    count = int(job.data.get("count", 5))
    return {"bucket": job.data["bucket"], "files": [f"part-{i:04d}.csv" for i in range(count)]}


@handler("file-processor")
async def process_file(job: Job) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    name: str = job.data["item"]  # this item of the list; job.data["index"] is its position
    return {"file": name, "rows": 100 + job.data["index"]}


@handler("file-merger")
def merge_files(job: Job) -> dict[str, Any]:
    parts = job.children_values()["process-file"]  # every item's value, in item order
    return {"files": len(parts), "rows": sum(p["rows"] for p in parts),
            "first": parts[0]["file"] if parts else None}


# --- decided at run time: children added by running code, a condition ------------------------


@handler("shard-scanner")
def scan_shards(job: Job) -> dict[str, Any]:
    # How many shards there are is only known now: add one node per shard to the waiting
    # parent. A retried attempt adds nothing more (it gets the same names back).
    shards = int(job.data["shards"])
    names = job.add_children(
        [{"name": f"shard-{i}", "queue": "shard-processor", "data": {"shard": i}}
         for i in range(shards)],
        parent="merge-shards")
    return {"shards": len(names)}


@handler("shard-processor")
def process_shard(job: Job) -> dict[str, Any]:
    return {"shard": job.data["shard"], "rows": 100 + 10 * job.data["shard"]}


@handler("shard-merger")
def merge_shards(job: Job) -> dict[str, Any]:
    values = job.children_values()
    shards = [v for name, v in values.items() if name.startswith("shard-")]
    return {"shards": len(shards), "rows": sum(s["rows"] for s in shards)}


@handler("publisher")
def publish(job: Job) -> dict[str, Any]:
    return {"published": job.children_values()["merge-shards"]["rows"]}


@handler("splitter")
def split_in_parts(job: Job) -> dict[str, Any]:
    # Two runs of one node: the first adds its parts as its own children and returns; the
    # node runs again once they are done, with their values, and that run's value is its value.
    parts = job.children_values()
    if not parts:
        job.add_children([{"name": f"part-{i}", "queue": "shard-processor",
                           "data": {"shard": i}} for i in range(3)])
        return {}
    return {"parts": len(parts), "rows": sum(p["rows"] for p in parts.values())}


# --- order workflow (a diamond: one payment, two parents) -------------------------------------


@handler("item-validation")
def validate_items(job: Job) -> dict[str, Any]:
    bad = [item["productId"] for item in job.data["items"] if item["quantity"] <= 0]
    if bad:
        raise ValueError(f"items with a quantity below 1: {', '.join(bad)}")
    return {"valid": True, "items": len(job.data["items"])}


@handler("customer-validation")
def validate_customer(job: Job) -> dict[str, Any]:
    return {"valid": True, "customerId": job.data["customerId"]}


@handler("validation")
def validate_order(job: Job) -> dict[str, Any]:
    checks = job.children_values()
    skipped = job.ignored_failures()  # validate-items may fail without stopping the order
    return {
        "orderId": job.data["orderId"],
        "valid": all(check["valid"] for check in checks.values()),
        "checked": sorted(checks),
        "skipped": sorted(skipped),
    }


@handler("payment")
def process_payment(job: Job) -> dict[str, Any]:
    validation = job.children_values()["validate-order"]
    if not validation["valid"]:
        raise ValueError(f"order {job.data['orderId']} failed validation")
    total = sum(item["quantity"] * item["unitPrice"] for item in job.data["items"])
    time.sleep(0.05)  # the payment provider's round trip
    job.log(f"charged {total:.2f} to customer {job.data['customerId']}")
    return {"paymentId": f"pay-{job.data['orderId']}", "charged": total}


@handler("inventory")
def reserve_inventory(job: Job) -> dict[str, Any]:
    payment = job.children_values()["process-payment"]
    return {
        "paymentId": payment["paymentId"],
        "reserved": {item["productId"]: item["quantity"] for item in job.data["items"]},
    }


@handler("shipping")
async def prepare_shipping(job: Job) -> dict[str, Any]:
    payment = job.children_values()["process-payment"]
    await asyncio.sleep(0.01)
    return {
        "paymentId": payment["paymentId"],
        "trackingId": f"trk-{job.data['orderId']}-{job.data['address']['country']}",
    }


@handler("order-fulfillment")
def fulfill_order(job: Job) -> dict[str, Any]:
    parts = job.children_values()
    inventory, shipping = parts["reserve-inventory"], parts["prepare-shipping"]
    if inventory["paymentId"] != shipping["paymentId"]:
        raise RuntimeError("inventory and shipping saw different payments")
    return {
        "orderId": job.data["orderId"],
        "paymentId": inventory["paymentId"],
        "trackingId": shipping["trackingId"],
        "reserved": inventory["reserved"],
    }


@handler("order-confirmation")
def send_confirmation(job: Job) -> dict[str, Any]:
    fulfilment = only_child_value(job)
    job.log(f"confirmation sent for order {job.data['orderId']}")
    return {"orderId": job.data["orderId"], "confirmed": True, **fulfilment}


# --- per-node options: attempts, backoff, priority --------------------------------------------


@handler("child-queue")
def flaky_child(job: Job) -> dict[str, Any]:
    if job.data.get("fail"):
        raise TransientError(f"{job.name} failed (it always does)")
    if job.attempt <= job.data.get("failUntilAttempt", 0):
        raise TransientError(f"{job.name}: upstream timed out on attempt {job.attempt}")
    return {"critical": job.data.get("critical", False), "attempt": job.attempt}


@handler("parent-queue")
def aggregate_children(job: Job) -> dict[str, Any]:
    return {
        "type": job.data["type"],
        "children": job.children_values(),
        "failedChildren": sorted(job.ignored_failures()),
    }


# --- error handling: failParent, ignore, remove -----------------------------------------------


@handler("critical")
def critical_task(job: Job) -> dict[str, Any]:
    if job.attempt <= job.data.get("failUntilAttempt", 0):
        raise TransientError(f"attempt {job.attempt}: database is restarting")
    return {"ok": True, "attempts": job.attempt}


@handler("optional")
def optional_task(job: Job) -> dict[str, Any]:
    if job.data.get("fail"):
        raise RuntimeError(f"{job.name}: {job.data.get('reason', 'failed')}")
    return {"ok": True}


@handler("parent")
def resilient_parent(job: Job) -> dict[str, Any]:
    succeeded = job.children_values()
    failed = job.ignored_failures()
    if failed:
        job.log(f"some optional children failed: {', '.join(sorted(failed))}")
    return {
        "totalChildren": len(succeeded) + len(failed),
        "successful": sorted(succeeded),
        "failed": {name: error.splitlines()[0] for name, error in sorted(failed.items())},
    }


@handler("cards")
def charge_card(job: Job) -> dict[str, Any]:
    if job.data["card"].replace(" ", "").endswith("0002"):
        raise CardDeclined(f"card ending 0002 declined for order {job.data['orderId']}")
    return {"charged": job.data["amount"]}


@handler("receipts")
def send_receipt(job: Job) -> dict[str, Any]:
    return {"sent": True, "charge": only_child_value(job)}


# --- dynamic flow (examples/dynamic_flow.py) --------------------------------------------------

SOURCE_ROWS = {"orders": 120, "customers": 45, "products": 30}


@handler("extraction")
async def extract_source(job: Job) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    source = job.data["source"]
    return {"source": source, "rows": SOURCE_ROWS.get(source, 10)}


@handler("transformation")
def apply_transformation(job: Job) -> dict[str, Any]:
    inputs = list(job.children_values().values())
    steps: list[str] = []
    sources: list[str] = []
    for value in inputs:  # extracts carry a source, a previous transformation carries steps
        steps = steps or value.get("steps", [])
        sources += value.get("sources", [value["source"]] if "source" in value else [])
    return {
        "rows": sum(value["rows"] for value in inputs),
        "sources": sorted(sources),
        "steps": [*steps, job.data["transform"]],
    }


@handler("loading")
def load_destination(job: Job) -> dict[str, Any]:
    upstream = list(job.children_values().values())
    return {
        "destination": job.data["destination"],
        "rows": sum(value["rows"] for value in upstream),
        "steps": upstream[0].get("steps", []) if upstream else [],
    }


@handler("flow-completion")
def complete_flow(job: Job) -> dict[str, Any]:
    loads = job.children_values()
    return {
        "flowId": job.data["flowId"],
        "destinations": sorted(value["destination"] for value in loads.values()),
        "rowsPerDestination": {v["destination"]: v["rows"] for v in loads.values()},
    }


# --- exit handlers (examples/on-exit.yaml) ----------------------------------------------------

@handler("backup")
def dump_database(job: Job) -> dict[str, Any]:
    if job.data["step"] == "dump" and job.data["diskFreeMb"] < 100:
        raise RuntimeError(f"no space left to dump {job.data['database']} "
                           f"({job.data['diskFreeMb']} MB free)")
    return {"step": job.data["step"], "done": True}


@handler("exit-cleanup")
def release_lock(job: Job) -> dict[str, Any]:
    # An exit node's data carries the flow's outcome as `flow`, whatever it was.
    return {"released": job.data["lock"], "after": job.data["flow"]["phase"]}


@handler("exit-notify")
def report_outcome(job: Job) -> dict[str, Any]:
    flow = job.data["flow"]
    failed = [f"{f['node']}: {f['error']}" for f in flow["failures"]]
    return {"channel": job.data["channel"],
            "text": f"{flow['namespace']}/{flow['name']} {flow['phase']}"
                    + (f" ({'; '.join(failed)})" if failed else ""),
            "cleanup": only_child_value(job)}
