"""Typed views of what the server returns, and the inputs of batch reports.

Field names are the JSON keys in snake_case (``runId`` → ``run_id``); dates are timezone-aware
:class:`datetime.datetime`; bigint ids (``task_attempt_id``) stay decimal strings, never floats.
Only the fields the HTTP contract returns are declared; any other key the server adds is kept,
unconverted and under its JSON name, in ``extra`` (so a newer server never breaks an older client),
and a declared key the server leaves out reads as ``None``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Literal, Optional, Type, TypeVar, Union, get_args, get_origin, get_type_hints
from .errors import ShardledgerError

__all__ = [
    "AttemptReport",
    "AttemptResult",
    "AttemptView",
    "AuditRecord",
    "AuditReport",
    "BatchItemResult",
    "CleanupReport",
    "CurrentRun",
    "DatasetPolicies",
    "DatasetStatus",
    "DatasetView",
    "FloorSummary",
    "GcReport",
    "MaintenancePassRecord",
    "PendingCleanupItem",
    "PendingCounts",
    "PublishResult",
    "RecordedEvent",
    "RetentionFloor",
    "RetryFailedReport",
    "RollbackResult",
    "Rollup",
    "RunAttemptCounts",
    "RunCounts",
    "RunDetail",
    "RunView",
    "SafetyWindowHold",
    "StartedRun",
    "WinnerView",
    "from_json",
    "parse_datetime",
]

T = TypeVar("T")

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def parse_datetime(value: str) -> datetime:
    """An ISO-8601 date as JavaScript's ``toISOString`` writes it (``2026-11-30T16:10:03.123Z``)."""
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    if sys.version_info < (3, 11):
        # fromisoformat before 3.11 takes only 3 or 6 fraction digits.
        m = re.match(r"^(.*T\d\d:\d\d:\d\d)\.(\d+)(.*)$", text)
        if m and len(m.group(2)) not in (3, 6):
            text = f"{m.group(1)}.{m.group(2)[:6].ljust(6, '0')}{m.group(3)}"
    return datetime.fromisoformat(text)


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(tp)
    if origin is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _convert(args[0], value)
        for a in args:  # the first that fits
            try:
                return _convert(a, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin in (list, List):
        item = (get_args(tp) or (Any,))[0]
        return [_convert(item, v) for v in value] if isinstance(value, list) else value
    if origin in (dict, Dict):
        kv = get_args(tp)
        item = kv[1] if len(kv) == 2 else Any
        return {k: _convert(item, v) for k, v in value.items()} if isinstance(value, dict) else value
    if origin is Literal:
        return value
    if tp is datetime:
        return parse_datetime(value) if isinstance(value, str) else value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_json(tp, value) if isinstance(value, dict) else value
    return value


_HINTS: Dict[type, Dict[str, Any]] = {}


def from_json(cls: Type[T], data: Dict[str, Any]) -> T:
    """Builds the dataclass ``cls`` from a JSON object: known keys converted by their type hints,
    missing ones ``None``, unknown ones kept in ``extra``."""
    if not isinstance(data, dict):
        raise ShardledgerError(
            "PROTOCOL", f"expected a JSON object for {cls.__name__}, got {type(data).__name__}"
        )
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls)
    kwargs: Dict[str, Any] = {}
    known = set()
    for f in dataclasses.fields(cls):
        if f.name == "extra":
            continue
        key = f.metadata.get("json", _camel(f.name))
        known.add(key)
        kwargs[f.name] = _convert(hints[f.name], data.get(key))
    extra = {k: v for k, v in data.items() if k not in known}
    return cls(**kwargs, extra=extra)  # type: ignore[call-arg]


def _extra() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


@dataclass
class AttemptResult:
    """An attempt as recorded after a report (``attempt succeed --json``)."""

    run_id: str
    shard: int
    attempt: int
    task_attempt_id: Optional[str]
    url: Optional[str]
    status: str
    extra: Dict[str, Any] = _extra()


@dataclass
class StartedRun:
    """The result of ``start_run``."""

    run_id: str
    dataset_id: str
    num_shards: int
    status: str
    extra: Dict[str, Any] = _extra()


@dataclass
class DatasetPolicies:
    """A dataset's policies: durations in milliseconds, and as text (``"30d"``) as the CLI prints
    them."""

    keep_runs: int
    retention_ms: int
    failed_retention_ms: int
    stale_after_ms: int
    safety_window_ms: int
    retention: Optional[str] = None
    failed_retention: Optional[str] = None
    stale_after: Optional[str] = None
    safety_window: Optional[str] = None
    extra: Dict[str, Any] = _extra()


@dataclass
class SafetyWindowHold:
    """The longer safety window still in force after a policy change shortened it."""

    window_ms: int
    until: datetime
    window: Optional[str] = None
    extra: Dict[str, Any] = _extra()


@dataclass
class DatasetView:
    """A dataset, its policies and its current run."""

    dataset_id: str
    root: str
    policies: DatasetPolicies
    current_run_id: Optional[str]
    current_manifest_url: Optional[str]
    current_moved_at: Optional[datetime]
    registered_at: datetime
    updated_at: datetime
    safety_window_hold: Optional[SafetyWindowHold] = None
    extra: Dict[str, Any] = _extra()


@dataclass
class RunAttemptCounts:
    total: int
    started: int
    succeeded: int
    failed: int
    winner: int
    loser: int
    cleanup_pending: int
    deleted: int
    extra: Dict[str, Any] = _extra()


@dataclass
class RunView:
    """One row of the run registry."""

    run_id: str
    dataset_id: str
    status: str
    num_shards: int
    current: bool
    publish_progress: str
    manifest_url: Optional[str]
    started_at: datetime
    updated_at: datetime
    heartbeat_at: datetime
    succeeded_at: Optional[datetime]
    failed_at: Optional[datetime]
    replaced_at: Optional[datetime]
    failure_cause: Optional[str]
    failure_reason: Optional[str]
    missing_shards: Optional[List[int]]
    reopened_count: int
    attempts: RunAttemptCounts
    extra: Dict[str, Any] = _extra()


@dataclass
class AttemptView:
    """One attempt of a run (``run(run_id).attempts``)."""

    shard: int
    attempt: int
    task_attempt_id: Optional[str]
    url: Optional[str]
    status: str
    outcome: str
    error: Optional[str]
    reported_at: datetime
    updated_at: datetime
    extra: Dict[str, Any] = _extra()


@dataclass
class WinnerView:
    """The winner of one shard."""

    shard: int
    attempt: int
    task_attempt_id: Optional[str]
    url: Optional[str]
    extra: Dict[str, Any] = _extra()


@dataclass
class RunDetail:
    """One run with its attempts and winners (``GET /v1/runs/{runId}``)."""

    run: RunView
    attempts: List[AttemptView]
    winners: List[WinnerView]
    extra: Dict[str, Any] = _extra()


@dataclass
class PublishResult:
    run_id: str
    status: str
    winners: List[WinnerView]
    manifest_url: str
    extra: Dict[str, Any] = _extra()


@dataclass
class RollbackResult:
    dataset_id: str
    run_id: str
    previous_run_id: Optional[str]
    manifest_url: str
    extra: Dict[str, Any] = _extra()


@dataclass
class PendingCleanupItem:
    """One item of the pending-cleanup set."""

    run_id: str
    dataset_id: str
    url: str
    reason: str
    state: str
    tries: int
    last_error_code: Optional[str]
    last_error_message: Optional[str]
    transient: Optional[bool]
    planned_at: datetime
    first_failure_at: Optional[datetime]
    last_failure_at: Optional[datetime]
    next_retry_at: Optional[datetime]
    extra: Dict[str, Any] = _extra()


@dataclass
class RetentionFloor:
    """What the failed-retention floor protects, and until when."""

    dataset_id: str
    kind: str
    run_id: str
    url: Optional[str]
    failed_at: datetime
    protected_until: datetime
    extra: Dict[str, Any] = _extra()


@dataclass
class Rollup:
    """Counts of what was pruned, per dataset and reason."""

    dataset_id: str
    reason: str
    pruned_runs: int
    pruned_attempts: int
    pruned_failed_items: int
    last_pruned_at: datetime
    extra: Dict[str, Any] = _extra()


@dataclass
class RunCounts:
    total: int
    started: int
    publishing: int
    succeeded: int
    failed: int
    pruned: int
    extra: Dict[str, Any] = _extra()


@dataclass
class PendingCounts:
    total: int
    due_now: int
    waiting: int
    exhausted: int
    next_retry_at: Optional[datetime]
    extra: Dict[str, Any] = _extra()


@dataclass
class FloorSummary:
    total: int
    next_leaves_at: Optional[datetime]
    items: List[RetentionFloor]
    extra: Dict[str, Any] = _extra()


@dataclass
class MaintenancePassRecord:
    kind: str
    holder: str
    started_at: datetime
    finished_at: datetime
    outcome: str
    deleted: int
    failed: int
    pruned: int
    error: Optional[str]
    extra: Dict[str, Any] = _extra()


@dataclass
class AuditRecord:
    at: datetime
    events: int
    match: bool
    differences: int
    #: Whether it was a deep audit (the archives checked too).
    deep: bool
    #: Archive problems a deep audit found; ``None`` when the audit did not look.
    archive_problems: Optional[int]
    extra: Dict[str, Any] = _extra()


@dataclass
class CurrentRun:
    run_id: str
    manifest_url: Optional[str]
    since: Optional[datetime]
    extra: Dict[str, Any] = _extra()


@dataclass
class DatasetStatus:
    """One dataset at a glance (``status``)."""

    dataset_id: str
    root: str
    policies: DatasetPolicies
    safety_window_hold: Optional[SafetyWindowHold]
    current: Optional[CurrentRun]
    runs: RunCounts
    pending: PendingCounts
    floor: FloorSummary
    last_maintenance: Optional[MaintenancePassRecord]
    last_audit: Optional[AuditRecord]
    extra: Dict[str, Any] = _extra()


@dataclass
class CleanupReport:
    """What a cleanup pass did (or, with ``dry_run``, would do). Other keys (``throughput``, …)
    are in ``extra``."""

    deleted: List[str]
    failed: List[Dict[str, Any]]
    planned: List[str]
    skipped: List[str]
    lease_lost: List[str]
    pending: int
    next_due_at: Optional[str]
    dry_run: bool
    extra: Dict[str, Any] = _extra()


@dataclass
class GcReport:
    """What a gc pass did (or would do): ``actions`` ``{kind, runId, urls}``, ``protected``
    ``{runId, why}``."""

    actions: List[Dict[str, Any]]
    failed: List[Dict[str, Any]]
    protected: List[Dict[str, Any]]
    dry_run: bool
    extra: Dict[str, Any] = _extra()


@dataclass
class RetryFailedReport:
    matched: int
    retried: int
    pruned_past_retention: int
    extra: Dict[str, Any] = _extra()


@dataclass
class RecordedEvent:
    """One event of the log. ``data`` and ``metadata`` stay as the JSON objects they are."""

    event_id: str
    stream_id: str
    stream_version: int
    global_position: int
    type: str
    schema_version: int
    data: Dict[str, Any]
    metadata: Dict[str, Any]
    recorded_at: datetime
    extra: Dict[str, Any] = _extra()


@dataclass
class AuditReport:
    """The result of ``audit``: the replay matched the live projections or not; ``at`` is when the
    server ran it."""

    events: int
    match: bool
    differences: List[Dict[str, Any]]
    at: Optional[datetime] = None
    extra: Dict[str, Any] = _extra()


ReportKind = Literal["started", "succeeded", "failed"]


@dataclass
class AttemptReport:
    """One item of a batch (``report_attempts``): what a writer would report with
    ``attempt_started`` / ``attempt_succeeded`` / ``attempt_failed``. ``task_attempt_id`` may be an
    int or a decimal string (sent as a string, so ids beyond 2**53 survive)."""

    kind: ReportKind
    shard: int
    attempt: int
    task_attempt_id: Optional[Union[int, str]] = None
    url: Optional[str] = None
    error: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        if self.kind not in ("started", "succeeded", "failed"):
            # A typo here would otherwise be refused item by item by the server; say it early.
            raise ValueError(f"AttemptReport.kind must be started, succeeded or failed, not {self.kind!r}")
        body: Dict[str, Any] = {"kind": self.kind, "shard": self.shard, "attempt": self.attempt}
        if self.task_attempt_id is not None:
            body["taskAttemptId"] = str(self.task_attempt_id)
        if self.url is not None:
            body["url"] = self.url
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass
class BatchItemResult:
    """The outcome of one item of a batch: ``ok`` with the recorded ``attempt``, or not ``ok`` with
    the typed ``error`` (a :class:`~shardledger.errors.ShardledgerError` subclass, ``status``
    ``None``). ``index`` is the item's position in the list given to ``report_attempts``."""

    index: int
    ok: bool
    attempt: Optional[AttemptResult] = None
    error: Optional[ShardledgerError] = None
