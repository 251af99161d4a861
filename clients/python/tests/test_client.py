"""Tests of the Python client against a real `shardledger serve`.

The server is the real one, started by the tests (never mocked): `node dist/bin/shardledger.js
serve` when the package is built, else `node --import tsx src/cli/main.ts serve` (override with
SHARDLEDGER_SERVE_CMD, a command line the `serve …` arguments are appended to). It runs on PGlite in
a temporary directory, or on PostgreSQL when DATABASE_URL is set (dataset ids are unique per run,
so a shared database is fine).

Only the retry tests (RetryTransportTest) talk to a tiny stdlib http.server instead: they test the
client's transport (which failures it repeats, how often, with which waits), which needs a server
that fails on purpose, and say so.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from shardledger import (  # noqa: E402
    AttemptReport,
    AuthError,
    Client,
    ConflictError,
    DatasetView,
    NotFoundError,
    ServerError,
    ShardledgerError,
    TransportError,
    ValidationError,
)

REPO = HERE.parents[2]
TOKENS = {
    "admin": "admin-" + uuid.uuid4().hex,
    "write": "write-" + uuid.uuid4().hex,
    "read": "read-" + uuid.uuid4().hex,
}
STARTUP_SECONDS = 120


def serve_command() -> List[str]:
    override = os.environ.get("SHARDLEDGER_SERVE_CMD")
    if override:
        return shlex.split(override)
    built = REPO / "dist" / "bin" / "shardledger.js"
    if built.exists():
        return ["node", str(built)]
    return ["node", "--import", "tsx", str(REPO / "src" / "cli" / "main.ts")]


class ServeProcess:
    """One `shardledger serve` child: started, its URL read from its first `listening` line, its
    output drained (so a full pipe never blocks it) and kept for failure messages, killed at the end."""

    def __init__(self, tmp: Path, tokens_file: Optional[Path]) -> None:
        database = os.environ.get("DATABASE_URL") or f"pglite:{tmp / 'db'}"
        env = dict(os.environ)
        env.pop("SHARDLEDGER_TOKENS", None)
        # A fresh database is created and migrated first, as an operator would (serve does not
        # migrate on its own); on PostgreSQL this is a no-op when already at the latest version.
        migrate = subprocess.run(
            serve_command() + ["migrate", "--database", database],
            cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=STARTUP_SECONDS,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed ({migrate.returncode}):\n{migrate.stdout}{migrate.stderr}")
        args = serve_command() + ["serve", "--listen", "127.0.0.1:0", "--database", database]
        if tokens_file is not None:
            args += ["--tokens", str(tokens_file)]
        self.args = args
        self.output: List[str] = []
        self.proc = subprocess.Popen(
            args,
            cwd=str(REPO),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def drain() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        self.url = self._wait_listening(lines)

    def _wait_listening(self, lines: "queue.Queue[Optional[str]]") -> str:
        while True:
            try:
                line = lines.get(timeout=STARTUP_SECONDS)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"serve did not say it listens within {STARTUP_SECONDS}s: {self.args}") from None
            if line is None:
                raise RuntimeError(f"serve exited ({self.proc.wait()}) before listening:\n{''.join(self.output)}")
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("msg") == "listening" and isinstance(doc.get("url"), str):
                return doc["url"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_SHARED: Dict[str, Any] = {}


def shared_server() -> "tuple[ServeProcess, Path]":
    """One real server with tokens for the whole module (started on first use: the retry tests
    alone need none); each test uses datasets of its own."""
    if "failed" in _SHARED:  # started once and failed: say so for every class, without retrying
        raise RuntimeError(f"the shared serve did not start: {_SHARED['failed']}")
    if "server" not in _SHARED:
        tmp = Path(tempfile.mkdtemp(prefix="shardledger-py-"))
        tokens_file = tmp / "tokens.json"
        tokens_file.write_text(
            json.dumps(
                {
                    "tokens": [
                        {"token": TOKENS["admin"], "scope": "admin", "datasets": "*"},
                        {"token": TOKENS["write"], "scope": "write", "datasets": ["py-writable-only"]},
                        {"token": TOKENS["read"], "scope": "read", "datasets": "*"},
                    ]
                }
            )
        )
        try:
            _SHARED["server"] = ServeProcess(tmp, tokens_file)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            _SHARED["failed"] = e
            raise
        _SHARED["tmp"] = tmp
    return _SHARED["server"], _SHARED["tmp"]


def tearDownModule() -> None:
    server = _SHARED.pop("server", None)
    if server is not None:
        server.stop()
    tmp = _SHARED.pop("tmp", None)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


class ServerTestCase(unittest.TestCase):
    server: ServeProcess
    tmp: Path

    @classmethod
    def setUpClass(cls) -> None:
        cls.server, cls.tmp = shared_server()

    def client(self, role: Optional[str] = "admin", **kwargs: Any) -> Client:
        return Client(self.server.url, token=TOKENS[role] if role else None, **kwargs)

    def new_dataset(self, client: Client, **policies: Any) -> DatasetView:
        dataset_id = f"py-{uuid.uuid4().hex[:12]}"
        root = (self.tmp / "lake" / dataset_id).as_uri()
        return client.create_dataset(dataset_id, root, **policies)

    def write_data(self, dataset: DatasetView, run_id: str, shard: int, attempt: int) -> str:
        """Writes an attempt's data into the file:// lake, as a writer would, and returns its url."""
        rel = f"data/{run_id}/shard={shard:05d}/attempt={attempt:02d}"
        folder = Path(dataset.root[len("file://") :]) / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.parquet").write_bytes(b"rows")
        return f"{dataset.root.rstrip('/')}/{rel}"


class WriterFlowTest(ServerTestCase):
    def test_a_writer_reports_its_attempts_and_publishes(self) -> None:
        c = self.client()
        ds = self.new_dataset(c, keep_runs=3, retention="14d")
        self.assertEqual(ds.policies.keep_runs, 3)
        self.assertEqual(ds.policies.retention_ms, 14 * 86_400_000)
        self.assertIsNone(ds.current_run_id)

        run_id = f"r-{uuid.uuid4().hex[:8]}"
        started = c.start_run(ds.dataset_id, 4, run_id=run_id)
        self.assertEqual((started.run_id, started.dataset_id, started.num_shards, started.status),
                         (run_id, ds.dataset_id, 4, "STARTED"))

        # Shard 0: started, then succeeded; the task attempt id is beyond 2**53 and survives.
        big = 2**63 - 5
        r = c.attempt_started(run_id, 0, 0, task_attempt_id=big)
        self.assertEqual((r.shard, r.attempt, r.status, r.task_attempt_id), (0, 0, "STARTED", str(big)))
        url0 = self.write_data(ds, run_id, 0, 0)
        r = c.attempt_succeeded(run_id, 0, 0, task_attempt_id=big, url=url0)
        self.assertEqual((r.status, r.url), ("SUCCEEDED", url0))

        # Shard 1 is retried: attempt 0 fails, attempt 1 succeeds.
        self.assertEqual(c.attempt_failed(run_id, 1, 0, error="executor lost").status, "FAILED")
        url1 = self.write_data(ds, run_id, 1, 1)
        self.assertEqual(c.attempt_succeeded(run_id, 1, 1, url=url1).status, "SUCCEEDED")

        # Shards 2 and 3 in one batch.
        url2, url3 = self.write_data(ds, run_id, 2, 0), self.write_data(ds, run_id, 3, 0)
        results = c.report_attempts(run_id, [
            AttemptReport("started", 2, 0),
            AttemptReport("succeeded", 2, 0, url=url2),
            AttemptReport("started", 3, 0, task_attempt_id="42"),
            AttemptReport("succeeded", 3, 0, task_attempt_id="42", url=url3),
        ])
        self.assertEqual([x.index for x in results], [0, 1, 2, 3])
        self.assertTrue(all(x.ok for x in results), [x.error for x in results])
        self.assertEqual([x.attempt.status for x in results if x.attempt], ["STARTED", "SUCCEEDED", "STARTED", "SUCCEEDED"])

        hb = c.heartbeat(run_id)
        self.assertEqual((hb.run_id, hb.status), (run_id, "STARTED"))

        published = c.publish(run_id)
        self.assertEqual(published.status, "SUCCEEDED")
        self.assertTrue(published.manifest_url.endswith(f"manifests/{run_id}.json"), published.manifest_url)
        self.assertEqual([(w.shard, w.attempt, w.url) for w in published.winners],
                         [(0, 0, url0), (1, 1, url1), (2, 0, url2), (3, 0, url3)])

        detail = c.run(run_id)
        self.assertEqual(detail.run.status, "SUCCEEDED")
        self.assertTrue(detail.run.current)
        self.assertIsNotNone(detail.run.succeeded_at)
        self.assertEqual([(w.shard, w.attempt) for w in detail.winners], [(0, 0), (1, 1), (2, 0), (3, 0)])
        self.assertEqual(detail.winners[0].task_attempt_id, str(big))
        by_id = {(a.shard, a.attempt): a for a in detail.attempts}
        self.assertEqual(by_id[(1, 0)].outcome, "FAILED")
        self.assertEqual(by_id[(1, 0)].error, "executor lost")
        self.assertEqual(by_id[(1, 1)].status, "WINNER")
        self.assertEqual(detail.run.attempts.total, 5)

        self.assertEqual(c.dataset(ds.dataset_id).current_run_id, run_id)
        self.assertIn(ds.dataset_id, [d.dataset_id for d in c.datasets()])
        status = c.status(ds.dataset_id)
        self.assertEqual(status.current.run_id if status.current else None, run_id)
        self.assertEqual(status.runs.succeeded, 1)
        self.assertIn(ds.dataset_id, [s.dataset_id for s in c.status()])
        self.assertEqual([r.run_id for r in c.runs(ds.dataset_id)], [run_id])

        # The log holds the run's story, oldest first.
        events = c.events(stream=run_id)
        self.assertEqual(events[0].type, "RunStarted")
        self.assertEqual([e.stream_version for e in events], list(range(1, len(events) + 1)))
        self.assertEqual(len(c.events(stream=run_id, from_=2, limit=2)), 2)

    def test_repeated_reports_are_recorded_once(self) -> None:
        c = self.client()
        ds = self.new_dataset(c)
        run_id = f"r-{uuid.uuid4().hex[:8]}"
        self.assertEqual(c.start_run(ds.dataset_id, 2, run_id=run_id).run_id, run_id)
        # Starting the same run again answers the same run: what makes start_run(run_id=…) retryable.
        self.assertEqual(c.start_run(ds.dataset_id, 2, run_id=run_id).status, "STARTED")
        url = self.write_data(ds, run_id, 0, 0)
        first = c.attempt_succeeded(run_id, 0, 0, url=url)
        before = len(c.events(stream=run_id))
        again = c.attempt_succeeded(run_id, 0, 0, url=url)
        self.assertEqual(again, first)
        batch = [AttemptReport("succeeded", 0, 0, url=url), AttemptReport("failed", 1, 0, error="oom")]
        once = c.report_attempts(run_id, batch)
        twice = c.report_attempts(run_id, batch)
        self.assertTrue(all(x.ok for x in once + twice))
        self.assertEqual([x.attempt for x in once], [x.attempt for x in twice])
        # The repeats appended nothing but the one new report (shard 1's failure).
        self.assertEqual(len(c.events(stream=run_id)), before + 1)
        self.assertEqual(c.run(run_id).run.attempts.total, 2)

    def test_one_client_shared_by_threads_reports_concurrently(self) -> None:
        c = self.client()
        ds = self.new_dataset(c)
        shards = 24
        run = c.start_run(ds.dataset_id, shards)
        urls = {s: self.write_data(ds, run.run_id, s, 0) for s in range(shards)}
        errors: List[BaseException] = []

        def writer(part: int) -> None:
            try:
                for shard in range(part, shards, 8):
                    c.attempt_started(run.run_id, shard, 0)
                    c.attempt_succeeded(run.run_id, shard, 0, url=urls[shard])
            except BaseException as e:  # noqa: BLE001 - reported by the assertion below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(p,)) for p in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(c.run(run.run_id).run.attempts.succeeded, shards)
        self.assertEqual(len(c.publish(run.run_id).winners), shards)

    def test_report_attempts_splits_long_lists_into_batches(self) -> None:
        c = self.client()
        ds = self.new_dataset(c)
        run = c.start_run(ds.dataset_id, 25)
        reports = [AttemptReport("started", s, 0) for s in range(25)]
        results = c.report_attempts(run.run_id, reports, batch_size=10)
        self.assertEqual([x.index for x in results], list(range(25)))
        self.assertTrue(all(x.ok for x in results))
        self.assertEqual(c.run(run.run_id).run.attempts.started, 25)


class ReadmeReportBufferTest(ServerTestCase):
    """The README's driver-side ReportBuffer (shared by its PySpark, Dask and Ray examples) is
    taken from the README itself and run here, so the documented pattern is known to work."""

    def test_the_readme_buffer_reports_from_many_threads_in_batches(self) -> None:
        text = (HERE.parent / "README.md").read_text()
        start = text.index("import threading, time\nfrom shardledger import AttemptReport, Client\n\nclass ReportBuffer")
        code = text[start : text.index("```", start)]
        scope: Dict[str, Any] = {}
        exec(compile(code, "README.md", "exec"), scope)

        c = self.client()
        ds = self.new_dataset(c)
        shards = 80
        run = c.start_run(ds.dataset_id, shards)
        buffer = scope["ReportBuffer"](c, run.run_id, max_items=40, max_delay=0.2)

        def task_ends(part: int) -> None:
            for shard in range(part, shards, 4):
                buffer.add(AttemptReport("started", shard, 0))
                buffer.add(AttemptReport("succeeded", shard, 0, url=self.write_data(ds, run.run_id, shard, 0)))

        threads = [threading.Thread(target=task_ends, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        buffer.close()
        self.assertEqual(buffer.refused, [])
        published = c.publish(run.run_id)
        self.assertEqual(len(published.winners), shards)
        self.assertEqual(c.run(run.run_id).run.attempts.winner, shards)


class ReadmeQuickstartTest(ServerTestCase):
    """The README's quickstart and whole-run examples, taken from the README and run against the
    real server, with the address, the ids and the roots made this test's own (a file:// lake of
    this test's, with the data the tasks would have written)."""

    def test_the_readme_examples_run(self) -> None:
        import re

        text = (HERE.parent / "README.md").read_text()
        blocks = re.findall(r"```python\n(.*?)```", text, re.S)[:2]
        self.assertIn("Client(", blocks[0])
        self.assertEqual(len([line for line in blocks[0].splitlines() if line.strip()]), 3)
        suffix = uuid.uuid4().hex[:8]
        events, clicks, run_id = f"events-{suffix}", f"clicks-{suffix}", f"2026-11-30-{suffix}"
        lake = self.tmp / "lake"
        for shard, attempt in ((0, 0), (1, 1)):
            folder = lake / clicks / f"data/{run_id}/shard={shard:05d}/attempt={attempt:02d}"
            folder.mkdir(parents=True)
            (folder / "part-0").write_bytes(b"rows")
        replacements = {
            "http://127.0.0.1:8080": self.server.url,
            'Client("{}", token=None)'.format(self.server.url): 'Client("{}", token="{}")'.format(
                self.server.url, TOKENS["admin"]
            ),
            "file:///tmp/lake/events": (lake / events).as_uri(),
            "file:///tmp/lake/clicks": (lake / clicks).as_uri(),
            '"events"': f'"{events}"',
            '"clicks"': f'"{clicks}"',
            '"2026-11-30"': f'"{run_id}"',
        }
        for block in blocks:
            code = block
            for old, new in replacements.items():
                code = code.replace(old, new)
            # The quickstart's client has no token; this server has tokens: give it the admin one.
            code = code.replace(f'Client("{self.server.url}")', f'Client("{self.server.url}", token="{TOKENS["admin"]}")')
            exec(compile(code, "README.md", "exec"), {"print": lambda *a: None})
        detail = self.client().run(run_id)
        self.assertEqual(detail.run.status, "SUCCEEDED")
        self.assertEqual([(w.shard, w.attempt) for w in detail.winners], [(0, 0), (1, 1)])
        # Exactly the three attempts the example reports: its started and succeeded reports of
        # shard 0 carry the same task_attempt_id, so they are one attempt (no phantom STARTED one).
        self.assertEqual(
            sorted(
                ((a.shard, a.attempt, a.task_attempt_id, a.status) for a in detail.attempts),
                key=lambda a: (a[0], a[1], a[2] or ""),
            ),
            [(0, 0, "9007199254740993", "WINNER"), (1, 0, None, "LOSER"), (1, 1, None, "WINNER")],
        )
        self.assertEqual(detail.run.attempts.total, 3)
        self.assertEqual(self.client().dataset(events).dataset_id, events)


class ErrorTest(ServerTestCase):
    def test_a_bad_shard_is_a_validation_error_naming_the_field(self) -> None:
        c = self.client()
        ds = self.new_dataset(c)
        run = c.start_run(ds.dataset_id, 2)
        with self.assertRaises(ValidationError) as caught:
            c.attempt_started(run.run_id, -1, 0)
        e = caught.exception
        self.assertEqual((e.code, e.field, e.status), ("VALIDATION", "shard", 400))
        self.assertTrue(e.message)
        self.assertTrue(e.request_id)  # the server's x-request-id, to find the request in its log
        self.assertEqual(c.run(run.run_id).attempts, [])  # nothing written

    def test_a_batch_refuses_bad_items_one_by_one(self) -> None:
        c = self.client()
        ds = self.new_dataset(c)
        run = c.start_run(ds.dataset_id, 2)
        results = c.report_attempts(run.run_id, [
            AttemptReport("started", 0, 0),
            AttemptReport("started", -3, 0),
            AttemptReport("failed", 1, 0, error="boom"),
        ])
        self.assertEqual([x.ok for x in results], [True, False, True])
        err = results[1].error
        assert isinstance(err, ValidationError)
        self.assertEqual((err.code, err.field), ("VALIDATION", "shard"))
        self.assertIsNone(results[1].attempt)
        self.assertEqual(c.run(run.run_id).run.attempts.total, 2)

    def test_an_unknown_run_is_not_found(self) -> None:
        c = self.client()
        with self.assertRaises(NotFoundError) as caught:
            c.run("no-such-run-" + uuid.uuid4().hex[:6])
        self.assertEqual((caught.exception.code, caught.exception.status), ("NOT_FOUND", 404))
        with self.assertRaises(NotFoundError):
            c.attempt_succeeded("no-such-run-" + uuid.uuid4().hex[:6], 0, 0)
        with self.assertRaises(NotFoundError):
            c.dataset("no-such-dataset-" + uuid.uuid4().hex[:6])

    def test_publish_with_missing_shards_is_a_conflict_naming_them(self) -> None:
        c = self.client()
        ds = self.new_dataset(c)
        run = c.start_run(ds.dataset_id, 3)
        c.attempt_succeeded(run.run_id, 0, 0, url=self.write_data(ds, run.run_id, 0, 0))
        c.attempt_failed(run.run_id, 2, 0, error="disk full")
        with self.assertRaises(ConflictError) as caught:
            c.publish(run.run_id)
        e = caught.exception
        self.assertEqual((e.code, e.status), ("SHARD_COVERAGE", 409))
        self.assertEqual(e.details["missingShards"], [1, 2])
        self.assertIn("retry-failed", e.message)
        self.assertEqual(c.run(run.run_id).run.status, "FAILED")
        self.assertEqual(c.run(run.run_id).run.missing_shards, [1, 2])

    def test_a_url_outside_the_runs_area_is_refused(self) -> None:
        c = self.client()
        ds = self.new_dataset(c)
        run = c.start_run(ds.dataset_id, 1)
        with self.assertRaises(ConflictError) as caught:
            c.attempt_succeeded(run.run_id, 0, 0, url=f"{ds.root}/manifests/x.json")
        self.assertEqual(caught.exception.code, "SAFETY_RAIL")


class AuthTest(ServerTestCase):
    def test_a_read_token_reads_but_cannot_start_a_run(self) -> None:
        ds = self.new_dataset(self.client())
        reader = self.client("read")
        self.assertEqual(reader.dataset(ds.dataset_id).dataset_id, ds.dataset_id)
        with self.assertRaises(AuthError) as caught:
            reader.start_run(ds.dataset_id, 2)
        self.assertEqual((caught.exception.status, caught.exception.code), (403, "FORBIDDEN"))
        self.assertEqual(reader.runs(ds.dataset_id), [])  # nothing happened

    def test_no_token_or_a_wrong_token_is_unauthenticated(self) -> None:
        for client in (self.client(None), Client(self.server.url, token="not-a-token")):
            with self.assertRaises(AuthError) as caught:
                client.datasets()
            self.assertEqual((caught.exception.status, caught.exception.code), (401, "UNAUTHENTICATED"))
        self.assertEqual(self.client(None).health()["status"], "ok")  # service endpoints need none
        self.assertEqual(self.client(None).ready()["status"], "ready")

    def test_a_write_token_writes_only_its_datasets(self) -> None:
        admin = self.client()
        ds = self.new_dataset(admin)
        run = admin.start_run(ds.dataset_id, 1)
        writer = self.client("write")  # may write py-writable-only, not this dataset
        with self.assertRaises(AuthError) as caught:
            writer.start_run(ds.dataset_id, 1)
        self.assertEqual(caught.exception.status, 403)
        with self.assertRaises(AuthError):
            writer.attempt_started(run.run_id, 0, 0)
        with self.assertRaises(AuthError):
            writer.report_attempts(run.run_id, [AttemptReport("started", 0, 0)])
        with self.assertRaises(AuthError):
            writer.publish(run.run_id)
        self.assertEqual(admin.run(run.run_id).attempts, [])


class OperatorTest(ServerTestCase):
    def test_the_operator_calls_return_their_views(self) -> None:
        c = self.client()
        ds = self.new_dataset(c, keep_runs=5)
        changed = c.update_dataset(ds.dataset_id, keep_runs=2, failed_retention="14d")
        self.assertEqual((changed.policies.keep_runs, changed.policies.failed_retention_ms), (2, 14 * 86_400_000))

        def publish_run(loser: bool) -> str:
            run = c.start_run(ds.dataset_id, 1)
            if loser:
                c.attempt_succeeded(run.run_id, 0, 0, url=self.write_data(ds, run.run_id, 0, 0))
            c.attempt_succeeded(run.run_id, 0, 1, url=self.write_data(ds, run.run_id, 0, 1))
            c.publish(run.run_id)
            return run.run_id

        first = publish_run(loser=True)
        second = publish_run(loser=False)
        back = c.rollback(ds.dataset_id, first)
        self.assertEqual((back.run_id, back.previous_run_id), (first, second))
        self.assertEqual(c.dataset(ds.dataset_id).current_run_id, first)

        failed = c.start_run(ds.dataset_id, 1)
        view = c.fail_run(failed.run_id, "driver crashed")
        self.assertEqual((view.status, view.failure_reason), ("FAILED", "driver crashed"))
        floors = c.retention_floors(ds.dataset_id)
        self.assertIn(failed.run_id, [f.run_id for f in floors])
        reopened = c.retry_failed(ds.dataset_id, run_id=failed.run_id)
        self.assertEqual(reopened.retried, 1)

        dry = c.cleanup(dataset_id=ds.dataset_id, dry_run=True)
        self.assertTrue(dry.dry_run)
        for item in c.pending_cleanup(ds.dataset_id):
            self.assertEqual(item.dataset_id, ds.dataset_id)
        done = c.cleanup(dataset_id=ds.dataset_id)
        self.assertFalse(done.dry_run)
        self.assertEqual(c.pending_cleanup(ds.dataset_id), [])
        self.assertEqual(c.run(first).run.attempts.deleted, 1)  # the loser of the first run

        gc = c.gc(ds.dataset_id, dry_run=True)
        self.assertTrue(gc.dry_run)
        self.assertIsInstance(c.rollups(ds.dataset_id), list)
        self.assertGreater(len(c.events(limit=5)), 0)

        report = c.audit()
        self.assertTrue(report.match, report.differences)
        self.assertIsNotNone(report.at)
        self.assertEqual(c.last_audit().at, report.at)
        # The ledger records it for status, with its depth: a plain audit did not check archives.
        recorded = c.status(ds.dataset_id).last_audit
        assert recorded is not None
        self.assertEqual((recorded.match, recorded.deep, recorded.archive_problems), (True, False, None))


class OpenApiContractTest(ServerTestCase):
    """The client's views against the server's own OpenAPI document: wherever the document
    describes a response's properties, every field the client declares without a default is among
    them, and every property the document requires is a field of the view (not left in `extra`).
    Where the document leaves a response as an open object, there is nothing to compare yet."""

    VIEWS = {
        ("get", "/v1/status"): "DatasetStatus",
        ("get", "/v1/datasets"): "DatasetView",
        ("post", "/v1/datasets"): "DatasetView",
        ("get", "/v1/datasets/{datasetId}"): "DatasetView",
        ("patch", "/v1/datasets/{datasetId}"): "DatasetView",
        ("get", "/v1/datasets/{datasetId}/status"): "DatasetStatus",
        ("get", "/v1/datasets/{datasetId}/runs"): "RunView",
        ("get", "/v1/datasets/{datasetId}/floors"): "RetentionFloor",
        ("get", "/v1/datasets/{datasetId}/rollups"): "Rollup",
        ("post", "/v1/datasets/{datasetId}/rollback"): "RollbackResult",
        ("post", "/v1/datasets/{datasetId}/gc"): "GcReport",
        ("post", "/v1/datasets/{datasetId}/retry-failed"): "RetryFailedReport",
        ("post", "/v1/runs"): "StartedRun",
        ("get", "/v1/runs/{runId}"): "RunDetail",
        ("post", "/v1/runs/{runId}/heartbeat"): "RunView",
        ("post", "/v1/runs/{runId}/fail"): "RunView",
        ("post", "/v1/runs/{runId}/attempts/started"): "AttemptResult",
        ("post", "/v1/runs/{runId}/attempts/succeeded"): "AttemptResult",
        ("post", "/v1/runs/{runId}/attempts/failed"): "AttemptResult",
        ("post", "/v1/runs/{runId}/publish"): "PublishResult",
        ("get", "/v1/pending"): "PendingCleanupItem",
        ("post", "/v1/cleanup"): "CleanupReport",
        ("get", "/v1/events"): "RecordedEvent",
        ("post", "/v1/audit"): "AuditReport",
        ("get", "/v1/audit/last"): "AuditReport",
    }

    def test_the_views_match_the_openapi_document(self) -> None:
        import dataclasses
        import urllib.request

        import shardledger.models as models

        with urllib.request.urlopen(self.server.url + "/openapi.json", timeout=30) as resp:
            doc = json.loads(resp.read())
        self.assertTrue(str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi"))

        def resolve(schema: Dict[str, Any]) -> Dict[str, Any]:
            while "$ref" in schema:
                node: Any = doc
                for part in schema["$ref"].lstrip("#/").split("/"):
                    node = node[part]
                schema = node
            return schema

        # Every operation of the document is a method of the client (its operationId in
        # snake_case; the per-dataset status is the library's status(datasetId), as here).
        import re

        aliases = {"dataset_status": "status"}
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if not path.startswith("/v1/") or "operationId" not in op:
                    continue
                name = re.sub(r"(?<!^)(?=[A-Z])", "_", op["operationId"]).lower()
                self.assertTrue(hasattr(Client, aliases.get(name, name)), f"{method.upper()} {path}: no {name}")

        compared = 0
        for (method, path), view in self.VIEWS.items():
            op = doc["paths"].get(path, {}).get(method)
            self.assertIsNotNone(op, f"{method.upper()} {path} is not in the document")
            ok = [v for c, v in op["responses"].items() if c.startswith("2")]
            schema = resolve(ok[0]["content"]["application/json"]["schema"])
            if schema.get("type") == "array":
                schema = resolve(schema.get("items", {}))
            props = schema.get("properties") or {}
            if not props:
                continue
            compared += 1
            fields = {f.name: f for f in dataclasses.fields(getattr(models, view)) if f.name != "extra"}
            json_names = {models._camel(n): f for n, f in fields.items()}
            for name, f in json_names.items():
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                    self.assertIn(name, props, f"{view}.{f.name}: not in {method.upper()} {path}")
            for name in schema.get("required", []):
                self.assertIn(name, json_names, f"{method.upper()} {path} requires {name}; {view} lacks it")
        self.assertGreater(compared, 0)


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first `fail` requests, then 200 with `[]` (or the configured status)."""

    fail = 2
    final_status = 200
    retry_after: Optional[str] = None
    seen: List[Dict[str, str]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).seen.append({"method": self.command, "path": self.path, "id": self.headers.get("x-request-id", "")})
        body: Any
        if len(type(self).seen) <= type(self).fail:
            status, body = 503, {"error": {"code": "INTERRUPTED", "message": "stopping"}}
        elif type(self).final_status != 200:
            status, body = type(self).final_status, {"error": {"code": "VALIDATION", "message": "no", "field": "x"}}
        else:
            status, body = 200, []
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == 503 and type(self).retry_after is not None:
            self.send_header("Retry-After", str(type(self).retry_after))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


class TokenValidationTest(unittest.TestCase):
    """A bearer token travels in an HTTP header: the constructor refuses one that cannot (not
    printable ASCII, or with whitespace / control characters, which would split the header) with
    a ValidationError naming `token`, before any request. No server is needed: nothing is sent."""

    def test_a_token_that_is_not_printable_ascii_is_refused_at_once(self) -> None:
        bad = [
            "…",                      # the README's placeholder, copied literally
            "tökén",                  # non-ASCII letters (http.client would raise UnicodeEncodeError)
            "admin\u00a0token",       # a no-break space pasted from a web page
            "secret\n",               # a token read from a file with its trailing newline
            "secret\r\nX-Evil: 1",    # header injection
            "sec ret",
            "\tsecret",
            "sec\x00ret",
            "sec\x7fret",
        ]
        for token in bad:
            with self.subTest(token=token):
                with self.assertRaises(ValidationError) as caught:
                    Client("http://127.0.0.1:1", token=token)
                e = caught.exception
                self.assertEqual((e.code, e.field, e.status), ("VALIDATION", "token", None))
                self.assertIn("printable ASCII", e.message)
                self.assertIn("token68", e.message)
                if token.strip():
                    self.assertNotIn(token.strip(), e.message)  # the secret itself is never echoed
        with self.assertRaises(ValidationError) as caught:
            Client("http://127.0.0.1:1", token=b"secret")  # type: ignore[arg-type]
        self.assertEqual(caught.exception.field, "token")

    def test_token68_and_other_visible_ascii_tokens_are_accepted(self) -> None:
        for token in (None, "", TOKENS["admin"], "AZaz09-._~+/==", "abc!#$%&'*^`|@"):
            with self.subTest(token=token):
                self.assertEqual(Client("http://127.0.0.1:1", token=token).token, token)


class RetryTransportTest(unittest.TestCase):
    """The retry loop of the transport. These tests use a tiny stdlib http.server that fails on
    purpose (the real server cannot be made to answer 503 on demand): they test only which failures
    the client repeats and how it waits, not the API, which the other tests check against the real
    server."""

    def setUp(self) -> None:
        _FlakyHandler.seen = []
        _FlakyHandler.fail = 2
        _FlakyHandler.final_status = 200
        _FlakyHandler.retry_after = None
        self.httpd: Optional[http.server.HTTPServer] = None
        self.waits: List[float] = []

    def tearDown(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def start_fake(self, port: int = 0) -> int:
        self.httpd = http.server.HTTPServer(("127.0.0.1", port), _FlakyHandler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.httpd.server_address[1]

    def client(self, port: int, **kwargs: Any) -> Client:
        c = Client(f"http://127.0.0.1:{port}", **kwargs)
        c._sleep = self.waits.append
        c._random = lambda: 0.5
        return c

    def test_an_idempotent_call_is_repeated_after_503_with_growing_waits(self) -> None:
        c = self.client(self.start_fake(), backoff=0.25)
        self.assertEqual(c.datasets(), [])
        self.assertEqual(len(_FlakyHandler.seen), 3)
        self.assertEqual(self.waits, [0.1875, 0.375])  # step 0.25·2^i: half fixed + half · jitter 0.5
        self.assertEqual(len({s["id"] for s in _FlakyHandler.seen}), 1)  # one request id for all tries

    def test_a_retry_after_header_lengthens_the_wait(self) -> None:
        _FlakyHandler.retry_after = "2"
        c = self.client(self.start_fake(), backoff=0.25)
        self.assertEqual(c.datasets(), [])
        self.assertEqual(self.waits, [2.0, 2.0])

    def test_a_redirect_is_not_followed(self) -> None:
        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:1/steal")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        c = self.client(self.httpd.server_address[1], token="secret")
        with self.assertRaises(ShardledgerError) as caught:
            c.datasets()
        self.assertEqual((caught.exception.code, caught.exception.status), ("HTTP_302", 302))
        self.assertEqual(self.waits, [])

    def test_a_base_url_must_be_http(self) -> None:
        for bad in ("127.0.0.1:8080", "ftp://host/", "http://"):
            with self.assertRaises(ValueError):
                Client(bad)
        self.assertEqual(Client("http://h:1/").base_url, "http://h:1")

    def test_retries_give_up_with_the_servers_error(self) -> None:
        _FlakyHandler.fail = 100
        c = self.client(self.start_fake(), retries=3)
        with self.assertRaises(ServerError) as caught:
            c.run("r1")
        self.assertEqual((caught.exception.code, caught.exception.status), ("INTERRUPTED", 503))
        self.assertEqual(len(_FlakyHandler.seen), 4)

    def test_publish_cleanup_and_gc_are_sent_once(self) -> None:
        c = self.client(self.start_fake())
        for call in (lambda: c.publish("r1"), lambda: c.cleanup(), lambda: c.gc("d"), lambda: c.start_run("d", 1)):
            _FlakyHandler.seen = []
            with self.assertRaises(ServerError):
                call()
            self.assertEqual(len(_FlakyHandler.seen), 1)
        self.assertEqual(self.waits, [])

    def test_reports_heartbeats_and_named_starts_are_repeated(self) -> None:
        c = self.client(self.start_fake())
        calls = [
            lambda: c.heartbeat("r1"),
            lambda: c.attempt_succeeded("r1", 0, 0),
            lambda: c.start_run("d", 1, run_id="r1"),
        ]
        for call in calls:
            _FlakyHandler.seen = []
            with self.assertRaises(ShardledgerError):
                call()  # the fake's final `[]` is no valid view; what counts is how often it was asked
            self.assertEqual(len(_FlakyHandler.seen), 3)

    def test_a_4xx_is_never_repeated(self) -> None:
        _FlakyHandler.fail = 0
        _FlakyHandler.final_status = 400
        c = self.client(self.start_fake())
        with self.assertRaises(ValidationError) as caught:
            c.datasets()
        self.assertEqual(caught.exception.field, "x")
        self.assertEqual(len(_FlakyHandler.seen), 1)

    def test_a_refused_connection_is_repeated_until_the_server_comes_up(self) -> None:
        _FlakyHandler.fail = 0
        with socket.socket() as s:  # a port nobody listens on (yet)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        c = self.client(port)

        def wait_then_start(seconds: float) -> None:
            self.waits.append(seconds)
            if len(self.waits) == 2:  # refused twice; now the server comes up
                self.start_fake(port)

        c._sleep = wait_then_start
        self.assertEqual(c.datasets(), [])
        self.assertEqual(len(self.waits), 2)
        self.assertEqual(len(_FlakyHandler.seen), 1)

    def test_a_connection_that_never_comes_up_is_a_transport_error(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        c = self.client(port, retries=2)
        with self.assertRaises(TransportError) as caught:
            c.datasets()
        self.assertIsNone(caught.exception.status)
        self.assertEqual(len(self.waits), 2)
        with self.assertRaises(TransportError):
            c.publish("r1")  # sent once: no wait added
        self.assertEqual(len(self.waits), 2)


if __name__ == "__main__":
    unittest.main()
