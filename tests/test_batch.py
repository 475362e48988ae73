"""``smm4h generate --batch``: the OpenAI Batch API engine against a scripted loopback server
(tests/scripted_batch.py) with the API's state changes, never the real API: a full run equals the
synchronous run, a kill -9 while the batch is in progress resumes the same batch, and partial,
expired, cancelled and failed batches are resubmitted once or reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import openai
import pytest

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.generation.batch import BATCH_PRICE_FACTOR, state_path
from smm4h_cli.generation.engine import CallCache
from smm4h_cli.generation.generate import generate
from smm4h_cli.io import read_records
from smm4h_cli.progress import ProgressEvent
from conftest import ROOT
from scripted_batch import ScriptedBatch
from scripted import Scripted
from test_generate import TRAIN5, _no_openai_env, options, train5  # noqa: F401 (fixtures: the posts, no key in the environment)


def batch_options(server, tmp_path, **kw):
    return options(base_url=server.url, batch=True, poll_interval=0.01, cache_path=tmp_path / "c.cache.jsonl", **kw)


def cached_calls(tmp_path) -> list[int]:
    return sorted(json.loads(line)["call"] for line in (tmp_path / "c.cache.jsonl").read_text().splitlines())


def cached_calls_and_none(tmp_path) -> tuple[list[int], int]:
    """The calls of the cache's lines, and how many lines were cached for calls of another run (``call`` null)."""
    calls = [json.loads(line)["call"] for line in (tmp_path / "c.cache.jsonl").read_text().splitlines()]
    return sorted(c for c in calls if c is not None), calls.count(None)


def test_a_batch_run_writes_the_posts_of_the_synchronous_run_at_half_the_cost(train5, tmp_path):
    prices = {"price_in": 10.0, "price_out": 30.0}
    with Scripted() as server:
        sync, sync_summary = generate(options(base_url=server.url, **prices), train5)
    events: list[ProgressEvent] = []
    with ScriptedBatch() as server:
        posts, summary = generate(batch_options(server, tmp_path, **prices), train5, progress=events.append)
        assert server.creates == 1 and server.uploads == 1 and server.submitted == [[0, 1, 2]]
        assert server.history["batch_0"] == ["validating", "in_progress", "in_progress", "in_progress", "finalizing", "completed"]
        assert server.deleted == ["file-in-0"] and "file-out-batch_0" in server.files  # the request file, not the answers
        assert cached_calls(tmp_path) == [0, 1, 2]
        assert not state_path(tmp_path / "c.cache.jsonl").exists()  # the batch is done: no record left to resume
        # run again (on the same server: the cache key names it): every call from the cache, no batch
        again, rerun = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 1 and server.uploads == 1
    assert again.equals(sync) and rerun.calls_cached == 3
    assert posts.equals(sync) and posts.height == 30
    assert summary.calls_failed == 0 and summary.batches == ["batch_0"] and summary.price_factor == BATCH_PRICE_FACTOR
    assert summary.prompt_tokens == sync_summary.prompt_tokens > 0
    assert summary.cost_usd == pytest.approx(sync_summary.cost_usd * BATCH_PRICE_FACTOR)
    statuses = [e.detail for e in events if getattr(e, "stage", None) == "batch"]  # until generate() speaks smm4h_cli.progress too
    assert "batch_0 validating" in statuses and "batch_0 in_progress" in statuses and statuses[-1] == "batch_0 completed"


def test_partial_failure_resubmits_the_failed_requests_once_then_reports_them(train5, tmp_path):
    # call 1: a server error, retried in a second batch, answered; call 2: refused for itself (400), reported at once
    with ScriptedBatch([{"fail": {1: 500, 2: 400}}]) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 2 and server.submitted == [[0, 1, 2], [1]]
        assert server.deleted == ["file-in-0", "file-in-1"]  # each round's request file, once its batch is over
    assert sorted(posts["call"].unique().to_list()) == [0, 1]
    assert summary.calls_failed == 1 and summary.errors == {"HTTP 400: scripted 400": 1}
    assert summary.calls_retried == 1 and summary.batches == ["batch_0", "batch_1"]
    assert cached_calls(tmp_path) == [0, 1]
    # the same request failing in the second batch too: reported, no third batch
    (tmp_path / "c.cache.jsonl").unlink()
    with ScriptedBatch([{"fail": {1: 500}}, {"fail": {1: 503}}]) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 2 and server.submitted == [[0, 1, 2], [1]]
    assert summary.calls_failed == 1 and summary.errors == {"HTTP 503": 1}
    assert cached_calls(tmp_path) == [0, 2]
    assert not state_path(tmp_path / "c.cache.jsonl").exists()


def test_expired_and_cancelled_batches_resubmit_what_was_not_answered(train5, tmp_path):
    with ScriptedBatch([{"end": "expired", "answer": 1}]) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 2 and server.submitted == [[0, 1, 2], [1, 2]]
    assert posts.height == 30 and summary.calls_failed == 0
    (tmp_path / "c.cache.jsonl").unlink()
    with ScriptedBatch([{"end": "cancelled", "answer": 2}, {"end": "cancelled"}]) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 2 and server.submitted == [[0, 1, 2], [2]]
        assert server.history["batch_0"][-2:] == ["cancelling", "cancelled"]
    assert summary.calls_failed == 1 and summary.errors == {"batch cancelled": 1}


def test_a_round_over_the_batch_limits_is_sent_in_parts_one_after_another(train5, tmp_path, monkeypatch):
    from smm4h_cli.generation import batch_files as batch_module

    with Scripted() as server:
        sync, _ = generate(options(base_url=server.url), train5)
    monkeypatch.setattr(batch_module, "MAX_REQUESTS", 2)  # the API's 50,000, scaled to three calls
    with ScriptedBatch() as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.submitted == [[0, 1], [2]] and server.uploads == 2
        assert [server.history[b][-1] for b in ("batch_0", "batch_1")] == ["completed", "completed"]
        assert server.deleted == ["file-in-0", "file-in-1"]
    assert posts.equals(sync) and summary.batches == ["batch_0", "batch_1"] and summary.calls_failed == 0
    assert not state_path(tmp_path / "c.cache.jsonl").exists()
    # a request sent again goes in the next round, after every part of the first
    (tmp_path / "c.cache.jsonl").unlink()
    with ScriptedBatch([{"fail": {0: 500}}]) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.submitted == [[0, 1], [2], [0]]
    assert posts.equals(sync) and summary.calls_retried == 1
    # the request file's bytes: room for one request per batch
    (tmp_path / "c.cache.jsonl").unlink()
    monkeypatch.setattr(batch_module, "MAX_REQUESTS", 50_000)
    with ScriptedBatch() as server:
        from smm4h_cli.generation.backends import resolve_backend
        from smm4h_cli.generation.generate import plan_calls

        opts = batch_options(server, tmp_path)
        lines = [len(json.dumps(batch_module.request_line(c.spec), ensure_ascii=False).encode()) + 1 for c in plan_calls(opts, resolve_backend(None, server.url), train5)]
        assert 2 * min(lines) > max(lines)
        monkeypatch.setattr(batch_module, "MAX_BYTES", max(lines))  # each line fits, no two do
        posts, summary = generate(opts, train5)
        assert server.submitted == [[0], [1], [2]]
    assert posts.equals(sync) and len(summary.batches) == 3


def test_a_run_stopped_in_its_second_part_resumes_that_batch_and_sends_no_part_twice(train5, tmp_path, monkeypatch):
    from smm4h_cli.generation import batch_files as batch_module

    with Scripted() as server:
        sync, _ = generate(options(base_url=server.url), train5)
    monkeypatch.setattr(batch_module, "MAX_REQUESTS", 2)
    with ScriptedBatch() as server:
        server.refuse_after = 7  # batch_0 takes 5 retrieves to complete; batch_1 is in progress at the 8th
        with pytest.raises(RunError, match="resume batch batch_1"):
            generate(batch_options(server, tmp_path), train5)
        record = json.loads(state_path(tmp_path / "c.cache.jsonl").read_text())
        assert record["part"] == 1 and record["batch_id"] == "batch_1" and server.batches["batch_1"]["status"] == "in_progress"
        assert cached_calls(tmp_path) == [0, 1]
        server.refuse_after = None
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 2 and server.uploads == 2 and server.submitted == [[0, 1], [2]]
    assert posts.equals(sync) and summary.batches == ["batch_1"] and summary.calls_cached == 2
    assert cached_calls(tmp_path) == [0, 1, 2] and not state_path(tmp_path / "c.cache.jsonl").exists()


def test_a_batch_in_flight_is_seen_to_its_end_by_a_run_that_does_not_make_its_calls(train5, tmp_path):
    """Paid answers are never dropped: a re-run with a smaller --n, or with other calls
    altogether, waits for the recorded batch and caches its answers; no call is sent twice."""
    with Scripted() as server:
        sync, _ = generate(options(base_url=server.url), train5)
    for rerun, own_batch, height in (({"n": 10}, False, 10), ({"seed": 1}, True, 30)):
        (tmp_path / "c.cache.jsonl").unlink(missing_ok=True)
        with ScriptedBatch() as server:
            server.refuse_after = 2  # the run stops while batch_0 (calls 0, 1, 2) is in progress
            with pytest.raises(RunError, match="resume batch batch_0"):
                generate(batch_options(server, tmp_path), train5)
            server.refuse_after = None
            posts, summary = generate(batch_options(server, tmp_path, **rerun), train5)
            assert server.creates == 1 + own_batch and summary.batches == ["batch_0", "batch_1"][:1 + own_batch]
            assert posts.height == height
            if own_batch:  # none of the re-run's calls were in batch_0: its three answers cached for later
                assert cached_calls_and_none(tmp_path)[1] == 3 and len(server.submitted[1]) == 3
            else:  # call 0 was: answered from it; calls 1 and 2 cached
                assert cached_calls_and_none(tmp_path) == ([0], 2)
            again, summary = generate(batch_options(server, tmp_path), train5)  # the first run's calls: all cached
            assert server.creates == 1 + own_batch and summary.calls_cached == 3
        assert again.equals(sync) and not state_path(tmp_path / "c.cache.jsonl").exists()


def test_calls_a_recorded_resubmission_round_did_not_plan_get_both_rounds_of_their_own(train5, tmp_path):
    """A run stopped in its second round (call 0 sent again), re-run with a larger --n: the
    recorded round goes on, then the new call 3 gets a first batch and, failing there, a second."""
    with ScriptedBatch([{"fail": {0: 500}}, {}, {"fail": {3: 500}}, {}]) as server:
        server.refuse_after = 7  # batch_0 takes 5 retrieves to complete; batch_1 (call 0 again) is in progress at the 8th
        with pytest.raises(RunError, match="resume batch batch_1"):
            generate(batch_options(server, tmp_path), train5)
        assert json.loads(state_path(tmp_path / "c.cache.jsonl").read_text())["round"] == 1
        server.refuse_after = None
        posts, summary = generate(batch_options(server, tmp_path, n=40), train5)
        assert server.submitted == [[0, 1, 2], [0], [3], [3]]
    assert posts.height == 40 and summary.calls_failed == 0 and summary.batches == ["batch_1", "batch_2", "batch_3"]


def test_a_record_between_rounds_written_before_plans_resumes_in_its_round(train5, tmp_path):
    """The between-rounds record of the code before rounds had parts (no keys): the calls go on
    in that round (the second), so they get one more batch, not two."""
    record = {"round": 1, "keys": [], "input_file_id": None, "batch_id": None}
    state_path(tmp_path / "c.cache.jsonl").write_text(json.dumps(record))
    with ScriptedBatch([{"fail": {0: 500}}]) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.submitted == [[0, 1, 2]]
    assert summary.calls_failed == 1 and summary.errors == {"HTTP 500": 1} and posts.height == 20


def test_an_uploaded_file_of_calls_the_run_does_not_make_gets_no_batch(train5, tmp_path):
    """A run stopped after its upload, before its create; a re-run with other calls deletes that
    file and pays for nothing of the other run."""
    with ScriptedBatch() as server:
        from smm4h_cli.generation.backends import resolve_backend
        from smm4h_cli.generation.batch_files import request_line
        from smm4h_cli.generation.generate import plan_calls

        opts = batch_options(server, tmp_path)
        plan = plan_calls(opts, resolve_backend(None, server.url), train5)
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
        uploaded = client.files.create(file=("b.jsonl", "".join(json.dumps(request_line(c.spec)) + "\n" for c in plan).encode()), purpose="batch")
        state_path(opts.cache_path).write_text(json.dumps(
            {"round": 0, "parts": [[c.spec.key for c in plan]], "part": 0, "input_file_id": uploaded.id, "batch_id": None}))
        posts, summary = generate(batch_options(server, tmp_path, seed=1), train5)
        assert server.creates == 1 and summary.batches == ["batch_0"] and uploaded.id in server.deleted
        assert len(server.submitted) == 1 and not set(server.submitted[0]) & {0, 1, 2}
    assert posts.height == 30 and cached_calls_and_none(tmp_path) == ([0, 1, 2], 0)


def test_calls_cached_since_the_caller_looked_are_answered_from_the_cache(train5, tmp_path):
    """What an earlier batch of the same run cached (a --fill round's calls, collected from a
    recorded batch): answered from the cache, never sent."""
    from smm4h_cli.generation.backends import resolve_backend
    from smm4h_cli.generation.batch import run_batch
    from smm4h_cli.generation.generate import plan_calls

    with ScriptedBatch() as server:  # one server throughout: the cache key names the server that answered
        generate(batch_options(server, tmp_path), train5)
        lines = (tmp_path / "c.cache.jsonl").read_text().splitlines()
        (tmp_path / "c.cache.jsonl").write_text(lines[1] + "\n" + "not json\n")  # call 1's answer, and a bad line
        opts = batch_options(server, tmp_path)
        backend = resolve_backend(None, server.url)
        specs = [c.spec for c in plan_calls(opts, backend, train5)]
        cache, results = CallCache(opts.cache_path), []
        run_batch(specs, backend, cache, results.append, poll_interval=0.01)
        assert server.submitted == [[0, 1, 2], [0, 2]]
    assert sorted((r.index, r.cached) for r in results) == [(0, False), (1, True), (2, False)]
    assert cache.ignored == 0  # the caller counts the cache's bad lines, once


def test_a_batch_refused_for_the_accounts_token_queue_keeps_its_part_for_a_re_run(train5, tmp_path):
    with Scripted() as server:
        sync, _ = generate(options(base_url=server.url), train5)
    with ScriptedBatch([{"end": "failed", "code": "token_limit_exceeded"}]) as server:
        with pytest.raises(RunError, match="queue of enqueued tokens.*Run the same command again"):
            generate(batch_options(server, tmp_path), train5)
        record = json.loads(state_path(tmp_path / "c.cache.jsonl").read_text())
        assert record["part"] == 0 and record["input_file_id"] is None and "file-in-0" in server.deleted
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.submitted == [[0, 1, 2], [0, 1, 2]] and summary.calls_failed == 0
    assert posts.equals(sync)


def test_a_run_without_batch_is_refused_while_a_batch_of_its_cache_is_in_flight(cli, train5, tmp_path):
    record = {"round": 0, "parts": [["k"]], "part": 0, "input_file_id": "file-in-0", "batch_id": "batch_0"}
    out = tmp_path / "o.jsonl"
    state_path(out.with_suffix(".cache.jsonl")).write_text(json.dumps(record))
    with Scripted() as server:
        result = cli("generate", "--base-url", server.url, "-o", out)
        said = " ".join(result.stderr.split())
        assert result.exit_code == 2 and "a --batch run of this cache is recorded" in said and "with --batch to finish it" in said
        assert "Generating" not in result.stderr  # the error alone, before the start line
        assert not server.attempts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.cache.jsonl.batch.json"]


def test_a_refused_create_keeps_the_rounds_plan(train5, tmp_path, monkeypatch):
    from smm4h_cli.generation import batch_files as batch_module

    monkeypatch.setattr(batch_module, "MAX_REQUESTS", 2)
    with ScriptedBatch([{"fail": {0: 500}}]) as server:
        server.refuse_create_at = 1  # batch_0 is created; the second part's batch is refused once
        with pytest.raises(RunError, match="refused to create the batch \\(400\\)"):
            generate(batch_options(server, tmp_path), train5)
        record = json.loads(state_path(tmp_path / "c.cache.jsonl").read_text())
        assert record["round"] == 0 and record["part"] == 1 and record["input_file_id"] is None
        assert "file-in-1" in server.deleted  # the refused part's request file
        posts, summary = generate(batch_options(server, tmp_path), train5)
        # the second part, then call 0 in the second round: no call in a third batch
        assert server.submitted == [[0, 1], [2], [0]]
    assert posts.height == 30 and summary.calls_failed == 0


@pytest.mark.parametrize("record", [
    {"round": 2, "parts": [], "part": 0, "input_file_id": None, "batch_id": None},  # past the last round
    {"round": 0, "parts": [["a"]], "part": -1, "input_file_id": None, "batch_id": None},
    {"round": True, "parts": [["a"]], "part": 0, "input_file_id": None, "batch_id": None},
    {"round": 0, "parts": [[1, 2]], "part": 0, "input_file_id": None, "batch_id": None},
    {"round": 0, "keys": "abc", "input_file_id": None, "batch_id": None},
    {"round": 0, "parts": [["a"]], "part": 0, "batch_id": None},
    {"round": 0, "parts": [["a"]], "part": 0, "input_file_id": None, "batch_id": 5},
])
def test_a_record_that_is_not_one_is_refused_with_what_to_do(train5, tmp_path, record):
    state_path(tmp_path / "c.cache.jsonl").write_text(json.dumps(record))
    with ScriptedBatch() as server:
        with pytest.raises(InputError, match="is not a record of a batch. Delete it"):
            generate(batch_options(server, tmp_path), train5)
        assert server.uploads == 0


def test_a_busy_api_while_polling_is_waited_out_not_a_second_batch(train5, tmp_path):
    with ScriptedBatch(flaky_polls=3) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 1 and server.flaky_polls == 0
    assert posts.height == 30 and summary.calls_failed == 0


def test_a_refused_key_while_polling_stops_with_a_message_and_keeps_the_batch(train5, tmp_path, monkeypatch):
    with ScriptedBatch(hold=True) as server:
        server.refuse_after = 2  # the key is revoked while the batch runs
        with pytest.raises(RunError, match="answered 401: refused the API key.*resume batch batch_0"):
            generate(batch_options(server, tmp_path), train5)
        assert server.creates == 1
    assert json.loads(state_path(tmp_path / "c.cache.jsonl").read_text())["batch_id"] == "batch_0"


def test_a_failed_batch_reports_every_call_and_submits_no_other(train5, tmp_path):
    with ScriptedBatch([{"end": "failed"}]) as server:
        _, summary = generate(batch_options(server, tmp_path), train5)
        assert server.creates == 1
    assert summary.calls_failed == 3
    assert summary.errors == {"batch failed: invalid_request: scripted refusal": 3}
    assert not (tmp_path / "c.cache.jsonl").exists() and not state_path(tmp_path / "c.cache.jsonl").exists()


def test_a_malformed_answer_is_never_cached_and_its_request_is_sent_again(train5, tmp_path):
    with ScriptedBatch([{"malformed": {0}}]) as server:
        posts, summary = generate(batch_options(server, tmp_path), train5)
        assert server.submitted == [[0, 1, 2], [0]]
    assert posts.height == 30 and summary.calls_failed == 0
    lines = [json.loads(line) for line in (tmp_path / "c.cache.jsonl").read_text().splitlines()]
    assert all(isinstance(line["content"], str) for line in lines) and len(lines) == 3


def test_a_run_killed_after_the_create_finds_its_batch_and_creates_none(train5, tmp_path):
    """The sidecar holds the input file, not yet the batch id (killed between create and save);
    it is a record of the form written before rounds had parts (``keys``), which still resumes."""
    with ScriptedBatch() as server:
        opts = batch_options(server, tmp_path)
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
        from smm4h_cli.generation.backends import resolve_backend
        from smm4h_cli.generation.batch_files import request_line
        from smm4h_cli.generation.generate import plan_calls

        plan = plan_calls(opts, resolve_backend(None, server.url), train5)
        data = "".join(json.dumps(request_line(c.spec)) + "\n" for c in plan).encode()
        uploaded = client.files.create(file=("b.jsonl", data), purpose="batch")
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        state_path(opts.cache_path).write_text(json.dumps(
            {"round": 0, "keys": [c.spec.key for c in plan], "input_file_id": uploaded.id, "batch_id": None}))
        posts, summary = generate(opts, train5)
        assert server.creates == 1 and server.uploads == 1
    assert posts.height == 30 and summary.batches == ["batch_0"]


@pytest.mark.slow  # two real `smm4h generate` processes (about 3 s of CPU), one killed with SIGKILL
def test_kill_9_while_in_progress_then_a_rerun_submits_no_second_batch(tmp_path):
    out = tmp_path / "syn.jsonl"
    cache = out.with_suffix(".cache.jsonl")
    env = {**{k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}, "PYTHONPATH": str(ROOT)}
    with ScriptedBatch(hold=True) as server:
        cmd = [sys.executable, "-m", "smm4h_cli", "generate", "--task", "5", "--n", "30", "--batch", "--base-url", server.url,
               "--poll-interval", "0.05", "-o", str(out), "--quiet"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and server.in_progress_seen < 2:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert server.batches["batch_0"]["status"] == "in_progress"
        assert json.loads(state_path(cache).read_text())["batch_id"] == "batch_0"
        assert not out.exists()
        server.release.set()
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert server.creates == 1 and server.uploads == 1
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["posts_kept"] == 30 and meta["batches"] == ["batch_0"] and meta["price_factor"] == 0.5
    assert not state_path(cache).exists()
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 3


def test_batch_is_refused_before_any_call_where_there_is_no_batch_api(cli, tmp_path):
    out = tmp_path / "o.jsonl"
    result = cli("generate", "--batch", "--model", "embedded", "-o", out)
    assert result.exit_code == 2 and "embedded model has none" in result.stderr
    with Scripted() as server:  # a chat server without /v1/batches
        result = cli("generate", "--batch", "--base-url", server.url, "-o", out)
        assert result.exit_code == 2 and "has no Batch API (GET /batches answered 404)" in result.stderr
        assert not server.attempts  # no chat call either
    with ScriptedBatch(batches_api=False) as server:
        result = cli("generate", "--batch", "--base-url", server.url, "-o", out)
        assert result.exit_code == 2 and "has no Batch API" in result.stderr
        result = cli("generate", "--batch", "--base-url", server.url, "-o", out, "--no-cache")
        assert result.exit_code == 2 and "--batch needs a call cache" in result.stderr
        result = cli("generate", "--batch", "--base-url", server.url, "-o", out, "--poll-interval", "0")
        assert result.exit_code == 2 and "--poll-interval must be positive" in result.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="needs a call cache"):
        options(batch=True)


def test_the_cli_batch_run_reports_its_batch(cli, tmp_path):
    out = tmp_path / "o.jsonl"
    with ScriptedBatch() as server:
        result = cli("generate", "--batch", "--n", "20", "--base-url", server.url, "-o", out, "--poll-interval", "0.01",
                     "--price-in", "1", "--price-out", "1")
    assert result.exit_code == 0, result.stderr
    assert "batches: batch_0 (cost at batch prices, x0.5)" in result.stderr
    assert read_records(out).height == 20
    assert CallCache(out.with_suffix(".cache.jsonl")).load()
