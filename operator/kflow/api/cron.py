"""Pydantic models of the CronFlow resource, and its schedule read by croniter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from kflow.api.errors import SpecError, combine, from_validation_error
from kflow.api.models import (
    API_VERSION,
    SPEC_FIELD_NAMES,
    Condition,
    FlowSpec,
    ObjectMeta,
    StrictBool,
    StrictInt,
    _Spec,
    _Status,
    object_ref,
)

ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]

# What the Flows of a CronFlow carry (the contract of issue 13).
LABEL_CRONFLOW = "kflow.dev/cronflow"
ANNOTATION_SCHEDULED_AT = "kflow.dev/scheduled-at"
# A run's Flow is `<cronflow>-<unix minutes>` (8 digits until the year 2160) and the CronFlow's
# name is a label value (at most 63 characters): Kubernetes' CronJob caps its names at 52 too.
MAX_CRONFLOW_NAME = 52

SCHEDULE_FIX = (
    "write five fields (minute hour day-of-month month day-of-week), like '*/5 * * * *', "
    "or a macro: @hourly, @daily, @weekly, @monthly, @yearly"
)
_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                     "@hourly"})


def schedule_problem(schedule: str) -> str | None:
    """Why croniter cannot read this 5-field schedule or macro, or None when it can."""
    text = schedule.strip()
    if text.startswith("@"):
        if text.lower() in _MACROS:
            return None
        return f"{text!r} is not a known macro; {SCHEDULE_FIX}"
    fields = text.split()
    if len(fields) != 5:
        return f"{text!r} has {len(fields)} fields, not 5; {SCHEDULE_FIX}"
    try:
        croniter(text)
    except (CroniterError, ValueError) as exc:
        return f"{text!r} cannot be read ({exc}); {SCHEDULE_FIX}"
    return None


def time_zone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone this process knows, or None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return (f"{name!r} is not an IANA time zone name; write one like 'Europe/Berlin' or "
                "'America/New_York', or leave timeZone out for UTC")
    return None


@dataclass(frozen=True)
class Schedule:
    """A readable schedule in its time zone: the slots it names, as aware datetimes."""

    expression: str
    zone: ZoneInfo

    @classmethod
    def of(cls, spec: CronFlowSpec) -> Schedule:
        return cls(spec.schedule.strip(), ZoneInfo(spec.time_zone or "UTC"))

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment`."""
        found: datetime = croniter(self.expression, moment.astimezone(self.zone)).get_next(
            datetime)
        return found.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last slot at or before `moment` (croniter's get_prev is strictly before)."""
        found: datetime = croniter(
            self.expression, (moment + timedelta(seconds=1)).astimezone(self.zone)
        ).get_prev(datetime)
        if found > moment:  # `moment` lay within the second before a slot
            found = croniter(self.expression, found.astimezone(self.zone)).get_prev(datetime)
        return found.astimezone(UTC)


class ScheduledFlowMeta(_Spec):
    """Labels and annotations each run's Flow gets (kflow adds its own beside them)."""

    labels: dict[str, str] | None = Field(None, description="Labels of each run's Flow.")
    annotations: dict[str, str] | None = Field(
        None, description="Annotations of each run's Flow.")


class ScheduledFlow(_Spec):
    """What each run is: the metadata and spec of the Flow a scheduled time creates."""

    metadata: ScheduledFlowMeta | None = Field(
        None, description="Labels and annotations of each run.")
    spec: FlowSpec = Field(
        description="The spec of each run's Flow, as in a Flow (`nodes` inline, or a "
        "`templateRef`).")


class CronFlowSpec(_Spec):
    """When to start a Flow, and what to do with runs that overlap or have finished."""

    schedule: str = Field(
        min_length=1,
        max_length=256,
        description="Cron schedule of five fields (minute hour day-of-month month day-of-week), "
        "like `*/5 * * * *`, or a macro: `@hourly`, `@daily`, `@weekly`, `@monthly`, "
        "`@yearly`. Read by croniter.",
    )
    time_zone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone the schedule is read in, like `Europe/Berlin`; UTC when "
        "unset.",
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        "Allow",
        description="When a scheduled time comes while a run has not finished: `Allow` starts "
        "another; `Forbid` skips the time (it is started once the run finishes, if still "
        "within `startingDeadlineSeconds`); `Replace` deletes the unfinished runs, then starts.",
    )
    starting_deadline_seconds: StrictInt | None = Field(
        None,
        ge=0,
        description="A scheduled time not started within this many seconds (the operator "
        "was down, or Forbid held it back) is skipped; no limit when unset.",
    )
    suspend: StrictBool = Field(
        False, description="While true no run is started; runs already started go on.")
    successful_flows_history_limit: StrictInt = Field(
        3, ge=0, description="Succeeded runs kept, the newest; the rest are deleted.")
    failed_flows_history_limit: StrictInt = Field(
        1, ge=0, description="Failed or cancelled runs kept, the newest; the rest are deleted.")
    flow: ScheduledFlow = Field(description="The Flow each scheduled time starts.")

    @field_validator("schedule")
    @classmethod
    def _readable_schedule(cls, value: str) -> str:
        problem = schedule_problem(value)
        if problem is not None:
            raise PydanticCustomError("cron_schedule", problem)
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_time_zone(cls, value: str | None) -> str | None:
        if value is not None:
            problem = time_zone_problem(value)
            if problem is not None:
                raise PydanticCustomError("time_zone", problem)
        return value


class FlowRef(_Status):
    """A run of the CronFlow: its Flow's name and uid."""

    name: str = Field(description="Name of the Flow.")
    uid: str | None = Field(None, description="UID of the Flow.")


class LastFlow(_Status):
    """The newest run and how it stands."""

    name: str = Field(description="Name of the Flow.")
    phase: str | None = Field(
        None, description="Its phase: Pending or Running while it runs, else how it ended.")


class CronFlowStatus(_Status):
    """What the operator reports about the schedule and its runs."""

    active: list[FlowRef] = Field(
        default_factory=list, max_length=1000,
        description="The runs not finished yet.")
    last_schedule_time: datetime | None = Field(
        None, description="The scheduled time of the newest run started.")
    last_successful_time: datetime | None = Field(
        None, description="When the newest succeeded run finished.")
    next_schedule_time: datetime | None = Field(
        None, description="The next scheduled time (none while suspended or invalid).")
    last_flow: LastFlow | None = Field(None, description="The newest run.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="`Ready` (True: scheduling, reason `Scheduled`, or `Suspended` while "
        "suspended; False when it cannot run), `Stalled` (True when the schedule, time zone "
        "or flow spec cannot run, reason `InvalidSchedule` or `InvalidSpec`; the message "
        "names the field and the fix) and `Reconciling` (False).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    observed_generation: int | None = Field(
        None, ge=0, description="The spec generation this status describes.")


class CronFlow(BaseModel):
    """Starts a Flow on a cron schedule, like a Kubernetes CronJob starts Jobs."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["kflow.dev/v1alpha1"] = Field(
        "kflow.dev/v1alpha1", description="`kflow.dev/v1alpha1`."
    )
    kind: Literal["CronFlow"] = Field("CronFlow", description="`CronFlow`.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: CronFlowSpec = Field(description="The schedule and the Flow it starts.")
    status: CronFlowStatus | None = Field(None, description="Reported by the operator.")

    @property
    def object_ref(self) -> str:
        return object_ref("CronFlow", self.metadata)




def parse_cronflow(doc: Mapping[str, Any]) -> CronFlow:
    """Validate a CronFlow manifest; raises SpecError naming the object, the field and the fix.

    The Flow spec it holds is checked as a Flow's schema; its graph is checked when a run's
    Flow is made from it (the operator judges it at once, see kflow.kube.cronflows).
    """
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name, namespace = meta.get("name"), meta.get("namespace")
    ref = object_ref("CronFlow", ObjectMeta(
        name=name if isinstance(name, str) else None,
        namespace=namespace if isinstance(namespace, str) else None))
    if doc.get("apiVersion") != API_VERSION:
        raise SpecError(ref, "apiVersion",
                        f"apiVersion is {doc.get('apiVersion')!r}; set it to {API_VERSION!r}")
    errors: list[SpecError] = []
    if isinstance(name, str) and len(name) > MAX_CRONFLOW_NAME:
        errors.append(SpecError(
            ref, "metadata.name",
            f"metadata.name has {len(name)} characters, more than {MAX_CRONFLOW_NAME}: a run's "
            "Flow adds its scheduled time to it and the name is a label value; shorten it"))
    try:
        parsed = CronFlow.model_validate(doc)
    except ValidationError as exc:
        errors.extend(from_validation_error(exc, ref, root_input=doc,
                                            known_fields=SPEC_FIELD_NAMES | _CRON_FIELD_NAMES))
    if errors:
        raise combine(errors)
    return parsed


_CRON_FIELD_NAMES = frozenset(
    info.alias or name
    for model in (CronFlowSpec, ScheduledFlow, ScheduledFlowMeta)
    for name, info in model.model_fields.items()
)
