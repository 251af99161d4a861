"""The HTTP client of ``shardledger serve`` (standard library only).

The method names are the TypeScript library's, in snake_case (``startRun`` → ``start_run``), and
each returns the typed view of the JSON the server answers with (see :mod:`shardledger.models`).
Failures raise :class:`~shardledger.errors.ShardledgerError` subclasses carrying the server's code,
message and field.

Retries. A call is repeated after a connection error (refused, reset, timed out) or a 502, 503 or
504 only when repeating it cannot do anything twice: every read (GET, and ``audit``, which only
reads), the attempt reports and their batches (idempotent by design: the same report recorded twice
is recorded once), ``heartbeat``, and ``start_run`` with an explicit ``run_id`` (the second start of
the same run answers the first one's result). The waits grow exponentially from ``backoff`` seconds
with jitter (and honour a ``Retry-After`` header). A 4xx is never repeated: the same request would
be refused again. ``publish``, ``cleanup``, ``gc``, ``fail_run``, ``retry_failed``, ``rollback``,
the dataset writes and ``start_run`` without a run id are sent once; see each docstring.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Union, overload

from .errors import ShardledgerError, TransportError, ValidationError, error_from_body
from .models import (
    AttemptReport,
    AttemptResult,
    AuditReport,
    BatchItemResult,
    CleanupReport,
    DatasetStatus,
    DatasetView,
    GcReport,
    PendingCleanupItem,
    PublishResult,
    RecordedEvent,
    RetentionFloor,
    RetryFailedReport,
    RollbackResult,
    Rollup,
    RunDetail,
    RunView,
    StartedRun,
    from_json,
)

__all__ = ["Client", "MAX_BATCH", "DEFAULT_BATCH"]

__version__ = "0.1.0"

#: The most reports one batch request may carry (the contract's 1..10000).
MAX_BATCH = 10_000
#: How many reports ``report_attempts`` sends per request unless told otherwise: big enough that
#: the HTTP round trip is noise, small enough that one request finishes well inside ``timeout``
#: (a batch that times out is sent again whole).
DEFAULT_BATCH = 1_000

_RETRY_STATUSES = frozenset({502, 503, 504})
#: The longest single wait between two tries, in seconds.
_MAX_WAIT = 30.0

Duration = Union[str, int]
TaskAttemptId = Union[int, str, None]


def _check_token(token: Optional[str]) -> None:
    """Refuses a bearer token that cannot travel in an ``Authorization`` header: http.client
    encodes headers as latin-1 (a non-ASCII token would fail at the first request with a raw
    ``UnicodeEncodeError``) and a space, CR, LF or other control character would split or inject
    a header. Visible ASCII (``!`` to ``~``) is accepted: RFC 6750's token68 characters and the
    few others the server's tokens file allows too. The message never repeats the token."""
    if token is None:
        return
    if not isinstance(token, str):
        raise ValidationError(
            "VALIDATION", f"a bearer token must be a str, not {type(token).__name__}", field="token"
        )
    for index, char in enumerate(token):
        if not "!" <= char <= "~":
            raise ValidationError(
                "VALIDATION",
                "a bearer token must be printable ASCII without spaces or control characters "
                "(RFC 6750 token68 characters: letters, digits and -._~+/=); this one has "
                f"U+{ord(char):04X} at index {index}",
                field="token",
            )


def _quote(segment: str) -> str:
    return urllib.parse.quote(str(segment), safe="")


class Client:
    """A client of one shardledger server.

    >>> client = Client("http://127.0.0.1:8080", token="…")            # doctest: +SKIP
    >>> run = client.start_run("events", num_shards=4)                  # doctest: +SKIP
    >>> client.attempt_succeeded(run.run_id, 0, 0, url=f"{root}/data/{run.run_id}/shard=00000/attempt=00")  # doctest: +SKIP

    :param base_url: where ``shardledger serve`` listens, e.g. ``http://127.0.0.1:8080``.
    :param token: the bearer token (``None`` for a server running without tokens). It travels in
        an HTTP header, so it must be printable ASCII without spaces (RFC 6750 token68 characters):
        any other character raises :class:`~shardledger.errors.ValidationError` (``field ==
        "token"``) here, before any request.
    :param timeout: seconds to wait for one HTTP response.
    :param retries: how many times an idempotent call is repeated after a connection error or a
        502/503/504 (0: never).
    :param backoff: the first wait in seconds; each following wait doubles, with jitter.

    A client may be shared between threads: it keeps no state between calls (each call opens its
    own connection: urllib does not pool them).
    """

    def __init__(
        self,
        base_url: str,
        token: Optional[str] = None,
        timeout: float = 30,
        retries: int = 5,
        backoff: float = 0.2,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be ≥ 0")
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
        _check_token(token)
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        # Seams for the tests of the retry loop (which wait and which jitter); not public API.
        self._sleep: Callable[[float], None] = time.sleep
        self._random: Callable[[], float] = random.random
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, token={'…' if self.token else None})"

    # ------------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Optional[Mapping[str, Any]] = None,
        idempotent: bool = False,
    ) -> Any:
        url = self.base_url + path
        if query:
            pairs = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {
            "Accept": "application/json",
            "User-Agent": f"shardledger-python/{__version__}",
            # One id for every try of this call, so the server's logs tie the tries together.
            "x-request-id": str(uuid.uuid4()),
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        tries = self.retries + 1 if idempotent else 1
        for attempt in range(tries):
            last = attempt == tries - 1
            try:
                return self._send(method, url, data, headers)
            except _Retryable as r:
                if last:
                    raise r.error from None
                self._sleep(self._wait(attempt, r.retry_after))

    def _send(self, method: str, url: str, data: Optional[bytes], headers: Dict[str, str]) -> Any:
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
                if not raw:
                    return None
                if "json" not in ctype:
                    return raw.decode("utf-8")
                try:
                    return json.loads(raw.decode("utf-8"))
                except ValueError as e:
                    raise ShardledgerError(
                        "PROTOCOL", f"{method} {url}: the answer is not JSON ({e})", status=resp.status
                    ) from None
        except urllib.error.HTTPError as e:
            raw = e.read() if e.fp is not None else b""
            try:
                payload = json.loads(raw.decode("utf-8")) if raw else None
            except ValueError:
                payload = None
            err = error_from_body(
                payload,
                status=e.code,
                request_id=e.headers.get("x-request-id") if e.headers else None,
                fallback_message=(raw.decode("utf-8", "replace")[:500] or str(e.reason)),
            )
            if e.code in _RETRY_STATUSES:
                raise _Retryable(err, _retry_after(e.headers.get("Retry-After") if e.headers else None)) from None
            raise err from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise _Retryable(
                TransportError("TRANSPORT", f"{method} {url}: {reason}", details={"url": url, "method": method})
            ) from None

    def _wait(self, attempt: int, retry_after: Optional[float]) -> float:
        # Exponential backoff with "equal jitter": half the step fixed, half random, so waits
        # still grow but many clients hit by the same outage do not come back in lockstep.
        step = min(_MAX_WAIT, self.backoff * float(2**attempt))
        wait = step / 2 + self._random() * step / 2
        if retry_after is not None:
            wait = max(wait, min(retry_after, _MAX_WAIT))
        return wait

    # ------------------------------------------------------------------ service

    def health(self) -> Dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok"}`` while the process answers."""
        return dict(self._request("GET", "/healthz", idempotent=True))

    def ready(self) -> Dict[str, Any]:
        """``GET /readyz``: ``{"status": "ready"}`` when the database is reachable and migrated
        (a 503 otherwise raises :class:`ServerError` after the retries)."""
        return dict(self._request("GET", "/readyz", idempotent=True))

    # ------------------------------------------------------------------ datasets

    def create_dataset(
        self,
        dataset_id: str,
        root: str,
        *,
        keep_runs: Optional[int] = None,
        retention: Optional[Duration] = None,
        failed_retention: Optional[Duration] = None,
        stale_after: Optional[Duration] = None,
        safety_window: Optional[Duration] = None,
    ) -> DatasetView:
        """Registers a dataset (admin). Idempotent on the server when the definition is identical,
        but sent once: a repeat with different policies is refused, and a lost answer is checked
        with :meth:`dataset`. Durations are text (``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``) or
        milliseconds."""
        body: Dict[str, Any] = {"datasetId": dataset_id, "root": root}
        body.update(
            _policies(
                keep_runs=keep_runs,
                retention=retention,
                failed_retention=failed_retention,
                stale_after=stale_after,
                safety_window=safety_window,
            )
        )
        return from_json(DatasetView, self._request("POST", "/v1/datasets", body))

    def update_dataset(
        self,
        dataset_id: str,
        *,
        keep_runs: Optional[int] = None,
        retention: Optional[Duration] = None,
        failed_retention: Optional[Duration] = None,
        stale_after: Optional[Duration] = None,
        safety_window: Optional[Duration] = None,
    ) -> DatasetView:
        """Changes a dataset's policies (admin); at least one is required."""
        body = _policies(
            keep_runs=keep_runs,
            retention=retention,
            failed_retention=failed_retention,
            stale_after=stale_after,
            safety_window=safety_window,
        )
        return from_json(DatasetView, self._request("PATCH", f"/v1/datasets/{_quote(dataset_id)}", body))

    def datasets(self) -> List[DatasetView]:
        return [from_json(DatasetView, d) for d in self._request("GET", "/v1/datasets", idempotent=True)]

    def dataset(self, dataset_id: str) -> DatasetView:
        return from_json(DatasetView, self._request("GET", f"/v1/datasets/{_quote(dataset_id)}", idempotent=True))

    @overload
    def status(self) -> List[DatasetStatus]: ...

    @overload
    def status(self, dataset_id: str) -> DatasetStatus: ...

    def status(self, dataset_id: Optional[str] = None) -> Union[DatasetStatus, List[DatasetStatus]]:
        """One dataset at a glance, or every dataset's when ``dataset_id`` is omitted."""
        if dataset_id is None:
            return [from_json(DatasetStatus, s) for s in self._request("GET", "/v1/status", idempotent=True)]
        path = f"/v1/datasets/{_quote(dataset_id)}/status"
        return from_json(DatasetStatus, self._request("GET", path, idempotent=True))

    # ------------------------------------------------------------------ runs

    def start_run(self, dataset_id: str, num_shards: int, run_id: Optional[str] = None) -> StartedRun:
        """Starts a run (write scope on the dataset). With an explicit ``run_id`` the call is
        repeated after a connection error or 502/503/504 (starting the same run again answers the
        same run); without one the server generates the id, so a repeat could start a second
        run, and the call is sent once — pass a ``run_id`` to get retries."""
        body: Dict[str, Any] = {"datasetId": dataset_id, "numShards": num_shards}
        if run_id is not None:
            body["runId"] = run_id
        return from_json(StartedRun, self._request("POST", "/v1/runs", body, idempotent=run_id is not None))

    def heartbeat(self, run_id: str) -> RunView:
        """Tells the ledger the run's writer is alive (keeps gc from counting it stale)."""
        return from_json(RunView, self._request("POST", f"/v1/runs/{_quote(run_id)}/heartbeat", idempotent=True))

    def fail_run(self, run_id: str, reason: str) -> RunView:
        """Marks the run FAILED (write). Sent once: a repeat after a lost answer is refused as an
        illegal transition; check with :meth:`run`."""
        return from_json(RunView, self._request("POST", f"/v1/runs/{_quote(run_id)}/fail", {"reason": reason}))

    def runs(self, dataset_id: str) -> List[RunView]:
        """The run registry of a dataset, newest first."""
        path = f"/v1/datasets/{_quote(dataset_id)}/runs"
        return [from_json(RunView, r) for r in self._request("GET", path, idempotent=True)]

    def run(self, run_id: str) -> RunDetail:
        """One run with its attempts and winners."""
        return from_json(RunDetail, self._request("GET", f"/v1/runs/{_quote(run_id)}", idempotent=True))

    def publish(self, run_id: str) -> PublishResult:
        """Selects the winners, writes the manifest, marks the run SUCCEEDED and moves
        ``_CURRENT`` (admin).

        Not retried automatically: publish changes what readers see and starts loser cleanup, and
        after a lost answer the run may already be SUCCEEDED (a blind repeat is then refused as an
        illegal transition) or may have FAILED on missing shards. The caller decides: read
        :meth:`run` and publish again only if the run is still STARTED/PUBLISHING."""
        return from_json(PublishResult, self._request("POST", f"/v1/runs/{_quote(run_id)}/publish"))

    # ------------------------------------------------------------------ attempts

    def attempt_started(
        self, run_id: str, shard: int, attempt: int, task_attempt_id: TaskAttemptId = None, url: Optional[str] = None
    ) -> AttemptResult:
        """Reports that an attempt of a shard started (idempotent, retried). An attempt is
        ``(shard, attempt, task_attempt_id)``: give its later ``attempt_succeeded`` /
        ``attempt_failed`` the same ``task_attempt_id`` (or none in all), or they are reports of
        another attempt."""
        return self._attempt(run_id, "started", shard, attempt, task_attempt_id, url, None)

    def attempt_succeeded(
        self, run_id: str, shard: int, attempt: int, task_attempt_id: TaskAttemptId = None, url: Optional[str] = None
    ) -> AttemptResult:
        """Reports that an attempt finished writing at ``url`` (idempotent, retried)."""
        return self._attempt(run_id, "succeeded", shard, attempt, task_attempt_id, url, None)

    def attempt_failed(
        self,
        run_id: str,
        shard: int,
        attempt: int,
        task_attempt_id: TaskAttemptId = None,
        url: Optional[str] = None,
        error: Optional[str] = None,
    ) -> AttemptResult:
        """Reports that an attempt failed (idempotent, retried); ``error`` is its message."""
        return self._attempt(run_id, "failed", shard, attempt, task_attempt_id, url, error)

    def _attempt(
        self,
        run_id: str,
        kind: str,
        shard: int,
        attempt: int,
        task_attempt_id: TaskAttemptId,
        url: Optional[str],
        error: Optional[str],
    ) -> AttemptResult:
        body = AttemptReport(kind, shard, attempt, task_attempt_id, url, error).to_json()  # type: ignore[arg-type]
        del body["kind"]
        path = f"/v1/runs/{_quote(run_id)}/attempts/{kind}"
        return from_json(AttemptResult, self._request("POST", path, body, idempotent=True))

    def report_attempts(
        self, run_id: str, reports: Iterable[AttemptReport], batch_size: int = DEFAULT_BATCH
    ) -> List[BatchItemResult]:
        """Reports many attempts, ``batch_size`` per request (default 1,000; at most 10,000).

        Each item is validated and applied on its own: the result list has one
        :class:`BatchItemResult` per report, in order (``index`` is the position in ``reports``),
        each ``ok`` with the recorded attempt or carrying the typed error (for example a
        :class:`ValidationError` with ``field == "shard"``). Nothing is raised for a refused item;
        an error of the request itself (auth, unknown run, bad body) raises, and the batches before
        it have been applied — reports are idempotent, so sending the whole list again is safe.
        A batch whose answer was lost is sent again for the same reason."""
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        items = [r.to_json() for r in reports]
        results: List[BatchItemResult] = []
        path = f"/v1/runs/{_quote(run_id)}/attempts/batch"
        for offset in range(0, len(items), batch_size):
            chunk = items[offset : offset + batch_size]
            answer = self._request("POST", path, {"reports": chunk}, idempotent=True)
            got = answer.get("results", []) if isinstance(answer, dict) else []
            if len(got) != len(chunk):
                raise ShardledgerError(
                    "PROTOCOL", f"the batch of {len(chunk)} reports came back with {len(got)} results"
                )
            for item in got:
                index = offset + int(item.get("index", 0))
                if item.get("ok"):
                    results.append(BatchItemResult(index, True, attempt=from_json(AttemptResult, item["attempt"])))
                else:
                    results.append(BatchItemResult(index, False, error=error_from_body(item.get("error"))))
        results.sort(key=lambda r: r.index)
        return results

    # ------------------------------------------------------------------ views

    def pending_cleanup(self, dataset_id: Optional[str] = None) -> List[PendingCleanupItem]:
        """The pending-cleanup set, of one dataset or all."""
        items = self._request("GET", "/v1/pending", query={"datasetId": dataset_id}, idempotent=True)
        return [from_json(PendingCleanupItem, i) for i in items]

    def retention_floors(self, dataset_id: str) -> List[RetentionFloor]:
        path = f"/v1/datasets/{_quote(dataset_id)}/floors"
        return [from_json(RetentionFloor, f) for f in self._request("GET", path, idempotent=True)]

    def rollups(self, dataset_id: str) -> List[Rollup]:
        path = f"/v1/datasets/{_quote(dataset_id)}/rollups"
        return [from_json(Rollup, r) for r in self._request("GET", path, idempotent=True)]

    def events(
        self, stream: Optional[str] = None, from_: Optional[int] = None, limit: Optional[int] = None
    ) -> List[RecordedEvent]:
        """Reads the log: one stream (``run-<id>``, a run id, ``dataset:<id>``…) from a version, or
        the global log after a position (``from_``: ``from`` is a Python keyword)."""
        query = {"stream": stream, "from": from_, "limit": limit}
        return [from_json(RecordedEvent, e) for e in self._request("GET", "/v1/events", query=query, idempotent=True)]

    def audit(self) -> AuditReport:
        """Replays the log into scratch projections and compares them with the live ones (read
        scope; it only reads, so it is retried like a GET). The server remembers the result."""
        return from_json(AuditReport, self._request("POST", "/v1/audit", idempotent=True))

    def last_audit(self) -> AuditReport:
        """The last audit this server ran (:class:`NotFoundError` before the first)."""
        return from_json(AuditReport, self._request("GET", "/v1/audit/last", idempotent=True))

    # ------------------------------------------------------------------ maintenance

    def cleanup(
        self, dataset_id: Optional[str] = None, dry_run: bool = False, retry_now: bool = False
    ) -> CleanupReport:
        """Deletes losers of published runs and drains the due pending-cleanup items (admin).

        Not retried automatically: a pass may have deleted objects before its answer was lost,
        and a 503 can mean the server stopped it midway; every deletion is planned in the log
        first, so the next pass finishes what this one left — call it again when you choose, or
        look at :meth:`pending_cleanup`. A :class:`LockedError` says another pass is running."""
        body: Dict[str, Any] = {"dryRun": dry_run, "retryNow": retry_now}
        if dataset_id is not None:
            body["datasetId"] = dataset_id
        return from_json(CleanupReport, self._request("POST", "/v1/cleanup", body))

    def gc(self, dataset_id: str, dry_run: bool = False) -> GcReport:
        """Stale runs, keep-runs, retention and the failed floor for one dataset (admin).

        Not retried automatically, for the same reason as :meth:`cleanup`: it deletes, and what a
        pass cut short left behind is finished by the next one, which the caller schedules."""
        return from_json(GcReport, self._request("POST", f"/v1/datasets/{_quote(dataset_id)}/gc", {"dryRun": dry_run}))

    def retry_failed(self, dataset_id: str, run_id: Optional[str] = None) -> RetryFailedReport:
        """Reopens failed runs and re-queues exhausted cleanup items inside the failed-retention
        floor (admin). Sent once."""
        body: Dict[str, Any] = {} if run_id is None else {"runId": run_id}
        path = f"/v1/datasets/{_quote(dataset_id)}/retry-failed"
        return from_json(RetryFailedReport, self._request("POST", path, body))

    def rollback(self, dataset_id: str, to_run_id: str) -> RollbackResult:
        """Moves ``_CURRENT`` back (or forward again) to a retained SUCCEEDED run (admin). Sent
        once: after a lost answer, :meth:`dataset` shows where ``_CURRENT`` is."""
        path = f"/v1/datasets/{_quote(dataset_id)}/rollback"
        return from_json(RollbackResult, self._request("POST", path, {"toRunId": to_run_id}))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: the API never redirects, and following one would send the
    bearer token to wherever it points (and turn a POST into a GET). A 3xx raises a
    :class:`ShardledgerError` with code ``HTTP_3xx``."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class _Retryable(Exception):
    def __init__(self, error: ShardledgerError, retry_after: Optional[float] = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from a proxy; fall back to our own backoff


def _policies(**values: Any) -> Dict[str, Any]:
    names = {
        "keep_runs": "keepRuns",
        "retention": "retention",
        "failed_retention": "failedRetention",
        "stale_after": "staleAfter",
        "safety_window": "safetyWindow",
    }
    return {names[k]: v for k, v in values.items() if v is not None}

