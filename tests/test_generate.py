"""``smm4h generate``: prompts, parsing, dedup and attributes; the engine against a scripted
loopback server for the faults a real server will not produce on demand (429 with Retry-After,
500, a hang, a dropped connection, malformed and refused answers); and the real embedded
SmolLM2 behind llama.cpp's server for a small end-to-end run and a kill -9 resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import polars as pl
import pytest

from smm4h_cli.errors import InputError
from smm4h_cli.generation import attributes as attrs
from smm4h_cli.generation.backends import resolve_backend
from smm4h_cli.generation.dedup import find_duplicates
from smm4h_cli.generation.generate import STRATEGIES, GenerateOptions, generate
from smm4h_cli.generation.parsing import parse_answer, parse_json_posts, parse_numbered_list
from smm4h_cli.generation.prompts import builtin_task, few_shot_prompt, load_definitions
from smm4h_cli.io import read_records
from smm4h_cli.sample import sample_path
from conftest import ROOT, write_jsonl
from scripted import Scripted, fake_post, numbered

TRAIN5 = sample_path(5, "train")
SECRET = "sk-test-DO-NOT-LEAK-4f9a2c71e0"


@pytest.fixture
def train5() -> pl.DataFrame:
    return read_records(TRAIN5, require_label=True)


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def options(**kw) -> GenerateOptions:
    base = {"task": builtin_task(5), "n": 30, "backoff": 0.05, "timeout": 5, "concurrency": 4}
    return GenerateOptions(**{**base, **kw})


# ------------------------------------------------------------------------------ prompts

def test_task5_prompt_is_the_papers_appendix_a11():
    prompt = few_shot_prompt(builtin_task(5), ["pos one", "pos two"], ["neg one", "neg two"], 10)
    assert prompt.startswith("The following tweets are from a parent with a child. The label has a definition like ' This binary")
    assert "from tweets that merely mention a disorder (annotated as \"0\")." in prompt
    assert prompt.index("Examples of label 0:\nneg one\nneg two") < prompt.index("Examples of label 1:\npos one\npos two")
    assert "Create 10 fictional tweets of ' label 1'.\n\nYou should output following style\n\n1. output1\n2. output2" in prompt
    assert prompt.endswith("10. output10")


def test_task6_prompt_shows_positives_first_and_its_definitions():
    prompt = few_shot_prompt(builtin_task(6), ["I turn 21 today"], ["my son is 4"], 3)
    assert "Label 1: This label is assigned to posts where the user's exact age can be determined" in prompt
    assert prompt.index("Examples of label 1:") < prompt.index("Examples of label 0:")
    assert prompt.endswith("Create 3 fictional tweets of ' label 1'.\n\nYou should output following style\n\n1. output1\n2. output2\n3. output3")


def test_list_style_and_attributes_in_the_prompt():
    prompt = few_shot_prompt(builtin_task(5), ["p"], ["n"], 10, {"tone": "proud"}, style="list")
    assert "- tone: proud" in prompt and "Examples of label 1:\n- p" in prompt
    assert prompt.endswith("Write 10 new fictional tweets of label 1. Answer with a numbered list from 1 to 10, one per line, and nothing else.")


def test_user_definitions_file(tmp_path):
    path = tmp_path / "drugs.yaml"
    path.write_text("definition: Label 1 posts report an adverse drug reaction.\npost_kind: forum posts\n")
    task = load_definitions(path)
    assert task.name == "drugs" and task.post_kind == "forum posts"
    assert "Create 10 fictional forum posts of ' label 1'." in few_shot_prompt(task, ["a"], ["b"])
    path.write_text("definitoin: typo\n")
    with pytest.raises(InputError, match="'definition'"):
        load_definitions(path)


# ------------------------------------------------------------------------------ parsing

def test_parse_clean_list():
    parsed = parse_numbered_list(numbered(0, 10), 10, "stop")
    assert len(parsed.posts) == 10 and not parsed.issues
    assert parsed.posts[0] == fake_post(0, 1)


def test_parse_counts_every_departure_from_a_clean_list():
    text = 'Sure! Here are your tweets:\n\n1) "My son has asthma"\n2) output2\n3)\n4) My daughter said mama\nat 3 years old\n\nHope this helps!'
    parsed = parse_numbered_list(text, 5)
    assert parsed.posts == ["My son has asthma", "My daughter said mama\nat 3 years old"]
    assert parsed.issues == Counter(prose=1, numbering=1, placeholder_items=1, empty_items=1, missing_items=1)


def test_parse_extra_truncated_bullets_refusal_empty():
    extra = parse_numbered_list(numbered(1, 12), 10)
    assert len(extra.posts) == 10 and extra.issues == Counter(extra_items=2)
    cut = parse_numbered_list(numbered(1, 4) + "\n5. My son", 10, "length")
    assert len(cut.posts) == 4 and cut.issues == Counter(missing_items=5, truncated=1)
    bullets = parse_numbered_list("- my son has asthma\n- her inhaler ran out", 2)
    assert bullets.posts == ["my son has asthma", "her inhaler ran out"] and bullets.issues == Counter(numbering=1)
    gaps = parse_numbered_list("1. my son has asthma\n3. her inhaler ran out", 2)
    assert gaps.issues == Counter(numbering=1)
    assert parse_numbered_list("I'm sorry, but I can't help with that.", 10).issues == Counter(refusal=1)
    assert parse_numbered_list("Tweets are short messages.", 10).issues == Counter(no_list=1)
    assert parse_numbered_list("", 10).issues == Counter(empty=1)
    assert parse_numbered_list(None, 10).posts == []


def test_a_post_starting_with_a_number_is_not_an_item():
    parsed = parse_numbered_list("1. 23 years old and still carded\n2. 2 kids, 1 inhaler, 0 sleep", 2)
    assert parsed.posts == ["23 years old and still carded", "2 kids, 1 inhaler, 0 sleep"] and not parsed.issues


def test_quotes_are_stripped_only_when_they_wrap_the_whole_post():
    """Failed before: any quote at both ends was cut, leaving '"Autism" is not ... is "different' unbalanced."""
    answer = (
        '1. "Autism" is not a bad word, my son is "different"\n'
        "2. \"My son said 'mama' today for the first time\"\n"
        "3. 'I don't know how he's so calm at the doctor's'\n"
        "4. “He said “no” again at speech therapy”\n"
        "5. “My daughter’s inhaler ran out at school”"
    )
    assert parse_numbered_list(answer, 5).posts == [
        '"Autism" is not a bad word, my son is "different"', "My son said 'mama' today for the first time",
        "I don't know how he's so calm at the doctor's", "“He said “no” again at speech therapy”",
        "My daughter’s inhaler ran out at school",
    ]


def test_a_line_starting_with_a_time_goes_on_with_its_post():
    """Failed before: "3:00 am ..." was read as item 3 (and "1.5 years ..." as item 1)."""
    answer = "1. My toddler will not sleep\n3:00 am and still no sleep\n2. Speech therapy again today\n1.5 years of waiting lists"
    parsed = parse_numbered_list(answer, 2)
    assert parsed.posts == ["My toddler will not sleep\n3:00 am and still no sleep", "Speech therapy again today\n1.5 years of waiting lists"]
    assert not parsed.issues


def test_closing_chatter_run_on_into_the_last_post_is_cut_and_counted():
    """Failed before: the chatter became part of the last post, uncounted."""
    posts = ["My son has asthma and the inhaler ran out", "ADHD meds finally working for my daughter"]
    for chatter in ("I hope these tweets are helpful for your dataset!", "Let me know if you need more examples.",
                    "Feel free to modify them as needed."):
        parsed = parse_numbered_list(f"1. {posts[0]}\n2. {posts[1]}\n{chatter}", 2)
        assert parsed.posts == posts and parsed.issues == Counter(prose=1), chatter
    # a post's own later lines stay, chatter-like or not
    own = "2. ADHD meds finally working\nlet me know if you have tips for mornings\nI hope these meds keep working"
    assert parse_numbered_list(f"1. {posts[0]}\n{own}", 2).posts[1] == own[3:]


@pytest.mark.parametrize("fmt", ["list", "json"])
def test_fragments_of_json_or_a_list_are_counted_not_kept(fmt):
    # what SmolLM2 writes inside the JSON grammar's strings (seen in the tuning runs), and a real short tweet
    items = ["},\n    body:", "[4]", "Istanbul, Turkey", "This is 1", "{{{}}}, {{{{2}}}", "[{}], {title: my son [2] [3]}",
             "My son has asthma", "2 kids, 1 inhaler, 0 sleep"]
    if fmt == "json":
        parsed = parse_json_posts(json.dumps({"posts": items}), len(items), "stop")
    else:
        parsed = parse_numbered_list("\n".join(f"{i}. {t}" for i, t in enumerate(items, 1)), len(items), "stop")
    assert parsed.posts == ["My son has asthma", "2 kids, 1 inhaler, 0 sleep"]
    assert parsed.issues == Counter(fragment_items=6)


# ------------------------------------------------------------------------------ attributes, dedup

def test_attribute_draws_are_even_and_depend_only_on_seed_and_call():
    disorders = attrs.TASK5_ATTRIBUTES["disorder of the child"]
    draws = [attrs.draw(attrs.TASK5_ATTRIBUTES, 7, i) for i in range(40)]
    counts = Counter(d["disorder of the child"] for d in draws)
    assert set(counts) == set(disorders) and set(counts.values()) == {10}
    assert attrs.draw(attrs.TASK5_ATTRIBUTES, 7, 33) == draws[33]
    assert [attrs.draw(attrs.TASK5_ATTRIBUTES, 8, i) for i in range(40)] != draws
    assert len({json.dumps(d, sort_keys=True) for d in draws}) == 40  # combinations spread, not cycled


def test_duplicates_and_leaks_are_flagged():
    train = ["My son was diagnosed with autism today!", "the weather is nice"]
    texts = [
        "my son was diagnosed with autism today",  # copies a training post
        "Our daughter uses her inhaler before soccer practice every Saturday morning",
        "our daughter uses her inhaler before soccer practice every saturday morning!!",  # exact after normalising
        "Our daughter uses her inhaler before soccer practice every Saturday mornings",  # near
        "Something else entirely about speech therapy",
    ]
    kinds, of, counts = find_duplicates(texts, train, ["t1", "t2"], ["s0", "s1", "s2", "s3", "s4"], 0.9)
    assert kinds == ["train_exact", None, "exact", "near", None]
    assert of == ["t1", None, "s1", "s1", None]
    assert counts == Counter(train_exact=1, exact=1, near=1)


# ------------------------------------------------------------------------------ options, backends

@pytest.mark.parametrize("strategy", ["paper", "attributes"])
def test_each_strategy_generates_posts_marked_with_it(train5, scripted, strategy):
    assert strategy in STRATEGIES  # offered by the library and so by --strategy
    server = scripted()
    frame, _ = generate(options(n=10, base_url=server.url, strategy=strategy), train5)
    assert frame.height == 10 and set(frame["strategy"]) == {strategy}
    assert frame["attributes"].is_null().all() == (strategy == "paper")  # only attributes conditions the prompt


@pytest.mark.parametrize("bad", [{"strategy": "magic"}, {"n": 0}, {"examples": 0}, {"temperature": 3}, {"dedup": "maybe"}, {"concurrency": 0}], ids=str)
def test_bad_options_are_refused(bad):
    with pytest.raises(InputError):
        options(**bad)


def test_attributes_of_an_own_task_need_a_file():
    with pytest.raises(InputError, match="--attributes FILE"):
        GenerateOptions(task=load_definitions_from_text("definition: x"), strategy="attributes")


def load_definitions_from_text(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    return load_definitions(f.name)


def test_backend_resolution_checks_before_work(monkeypatch):
    embedded = resolve_backend(None, None)
    assert (embedded.kind, embedded.base_url) == ("embedded", None)
    with pytest.raises(InputError, match="OPENAI_API_KEY is not set"):
        resolve_backend("gpt-4-0125-preview", None)
    with pytest.raises(InputError, match="cannot reach the server"):
        resolve_backend(None, "http://127.0.0.1:9/v1")
    with Scripted() as server:
        assert resolve_backend(None, server.url).model == "scripted"
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        backend = resolve_backend(None, None)
        assert (backend.kind, backend.model) == ("compatible", "scripted")
        with pytest.raises(InputError, match="does not know the model 'llama-9000'. It serves: scripted"):
            resolve_backend("llama-9000", server.url)


# ------------------------------------------------------------------------------ the engine, scripted

def test_faults_are_retried_and_counted(train5, tmp_path):
    script = {
        0: [("429", 1)],
        1: [("500",), ("500",)],
        2: [("hang", 3)],
        3: [("drop",)],
        4: [("content", "I'm sorry, I cannot write tweets about children's health.")],
        5: [("content", "Here you go:\n\n" + numbered(5, 7))],
        6: [("500",)] * 10,
    }
    with Scripted(script) as server:
        opts = options(n=80, base_url=server.url, tries=3, timeout=1.5, cache_path=tmp_path / "c.jsonl")
        frame, summary = generate(opts, train5)
        retry_gap = server.times[0][1] - server.times[0][0]
    s = summary.to_dict()
    assert s["backend"] == "compatible" and s["calls"] == 8
    assert s["calls_failed"] == 1 and s["errors"] == {"HTTP 500": 1}
    assert s["calls_retried"] == 5  # calls 0, 1, 2, 3 and (failed) 6
    assert server.attempts[6] == 3 and server.attempts[1] == 3
    assert retry_gap >= 1.0  # the Retry-After of the 429 was honoured
    assert s["parse_issues"] == {"missing_items": 3, "prose": 1, "refusal": 1}
    assert s["posts_kept"] == frame.height == 10 * 5 + 7
    assert set(frame["call"].unique()) == {0, 1, 2, 3, 5, 7}
    assert frame["id"].is_unique().all() and frame["id"][0] == "syn-paper-0000-01"
    assert frame["text"][0] == fake_post(0, 1)
    # failed calls are not cached: a second run (on the same server) asks only for call 6 again
    with Scripted(at=server.url) as server:
        again, summary2 = generate(options(n=80, base_url=server.url, cache_path=tmp_path / "c.jsonl"), train5)
        assert dict(server.attempts) == {6: 1}
    assert summary2.calls_cached == 7 and summary2.calls_failed == 0 and again.height == frame.height + 10


def test_cache_resume_gives_the_same_output_and_makes_no_call(train5, tmp_path):
    cache = tmp_path / "c.jsonl"
    with Scripted() as server:
        first, _ = generate(options(n=50, base_url=server.url, cache_path=cache, strategy="attributes"), train5)
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:3]) + "\n" + lines[3][:25])  # as if killed while writing call 4
    with Scripted(at=server.url) as server:
        resumed, summary = generate(options(n=50, base_url=server.url, cache_path=cache, strategy="attributes"), train5)
        assert sum(server.attempts.values()) == 2
    assert summary.calls_cached == 3 and summary.cache_lines_ignored == 1
    assert resumed.equals(first)
    with Scripted(at=server.url) as server:
        _, summary = generate(options(n=50, base_url=server.url, cache_path=cache, strategy="attributes"), train5)
        assert sum(server.attempts.values()) == 0
    assert summary.calls_cached == 5
    attributes = [json.loads(a) for a in first.unique("call", maintain_order=True)["attributes"]]
    assert all(set(a) == set(attrs.TASK5_ATTRIBUTES) for a in attributes)
    assert len({a["disorder of the child"] for a in attributes[:4]}) == 4


def test_provenance_columns(train5):
    with Scripted() as server:
        frame, summary = generate(options(n=12, base_url=server.url, per_call=6, examples=3, seed=0), train5)
    row = frame.row(0, named=True)
    assert {k: row[k] for k in ("label", "source", "model", "strategy", "call", "item", "seed", "temperature")} == {
        "label": 1, "source": "synthetic", "model": "scripted", "strategy": "paper", "call": 0, "item": 1, "seed": 0, "temperature": 0.0,
    }
    shown = row["examples_positive"].split(",") + row["examples_negative"].split(",")
    labels = dict(read_records(TRAIN5).select("id", "label").rows())
    assert [labels[i] for i in shown] == [1, 1, 1, 0, 0, 0]
    assert len(row["prompt_hash"]) == 16 and row["attributes"] is None
    assert summary.cost_usd is None and summary.prompt_tokens > 0


# ------------------------------------------------------------------------------ the CLI

def test_cli_against_a_server_never_leaks_the_key(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = tmp_path / "syn.jsonl"
    with Scripted() as server:
        result = cli("generate", "--task", "6", "--n", "20", "--base-url", server.url, "-o", out, "--price-in", "1", "--price-out", "2")
        assert server.auth[0] == f"Bearer {SECRET}"  # the key is sent to the server, and only there
    assert result.exit_code == 0, result.stderr
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["posts_kept"] == 20 and meta["backend"] == "compatible" and meta["cost_usd"] > 0
    assert "posts kept 20 of 20" in result.stderr
    for path in tmp_path.iterdir():
        assert SECRET not in path.read_text(), path
    assert SECRET not in result.stdout + result.stderr
    with Scripted(models=("other",)) as server:
        result = cli("generate", "--n", "10", "--base-url", server.url, "--model", "scripted", "-o", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "does not know the model 'scripted'" in result.stderr
    assert SECRET not in result.stderr
    assert SECRET not in cli("generate", "--help").stdout


def test_cli_refuses_before_work(cli, tmp_path):
    out = write_jsonl(tmp_path / "exists.jsonl", [{"text": "x"}])
    result = cli("generate", "--n", "10", "-o", out)
    assert result.exit_code == 2 and "Pass --force" in result.stderr
    result = cli("generate", "--definitions", tmp_path / "d.yaml")
    assert result.exit_code == 2 and "--train" in result.stderr
    result = cli("generate", "--strategy", "attributes", "--attributes", write_jsonl(tmp_path / "a.json", []), "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 2 and "mapping from attribute names" in result.stderr
    result = cli("generate", "--model", "gpt-4-0125-preview", "-o", tmp_path / "o.jsonl")
    assert result.exit_code == 2 and "OPENAI_API_KEY is not set" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_own_task_with_attributes_to_stdout(cli, tmp_path):
    definitions = tmp_path / "task.json"
    definitions.write_text(json.dumps({"definition": "Label 1: the poster's child has asthma.", "post_kind": "posts"}))
    attributes = tmp_path / "attrs.yaml"
    attributes.write_text("season: [winter, spring]\ntrigger: [cold air, pollen, a cold]\n")
    with Scripted() as server:
        result = cli("generate", "--definitions", definitions, "--train", TRAIN5, "--strategy", "attributes",
                     "--attributes", attributes, "--n", "40", "--base-url", server.url, "--quiet")
    assert result.exit_code == 0 and result.stderr == ""
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 40 and {r["strategy"] for r in rows} == {"attributes"}
    seasons = Counter(json.loads(r["attributes"])["season"] for r in rows)
    assert seasons == {"winter": 20, "spring": 20}


def test_cli_in_a_log_file_prints_plain_progress_lines(cli, tmp_path):
    # CliRunner's stderr is not a terminal, as under nohup or in a cluster job's log: progress
    # comes as plain lines (the first and the last at least), not as a bar and not as silence.
    with Scripted() as server:
        result = cli("generate", "--n", "30", "--base-url", server.url, "-o", tmp_path / "syn.jsonl")
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("generate: ")]
    assert re.fullmatch(r"generate: 0/3 · 0 posts · 0 tokens · 0 failed \([\d,]+ s\)", lines[0]), lines
    assert re.fullmatch(r"generate: 3/3 · 30 posts · [1-9][\d,]* tokens · 0 failed \([\d,]+ s\)", lines[-1]), lines
    assert "\x1b[" not in result.stderr  # no bar, no terminal control codes


# ------------------------------------------------------------------------------ the embedded model

# Two calls of three short posts: the machine is small and shared.
EMBEDDED_ARGS = ["--task", "5", "--n", "6", "--per-call", "3", "--examples", "2", "--max-tokens", "96", "--concurrency", "1"]


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    """One uninterrupted run on the real embedded SmolLM2 (llama.cpp server), through the CLI."""
    from typer.testing import CliRunner

    from smm4h_cli.cli import app

    out = tmp_path_factory.mktemp("embedded") / "syn.jsonl"
    env = {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}
    result = CliRunner().invoke(app, ["generate", *EMBEDDED_ARGS, "-o", str(out)], env=env, catch_exceptions=False)
    return result, out


@pytest.mark.slow
def test_embedded_end_to_end_and_real_output_parsed_honestly(embedded_run):
    result, out = embedded_run
    assert result.exit_code == 0, result.stderr
    frame = read_records(out)
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["backend"] == "embedded" and meta["model"] == "embedded:SmolLM2-135M-Instruct" and meta["calls"] == 2
    assert meta["calls_failed"] == 0 and meta["cost_usd"] == 0.0 and meta["completion_tokens"] > 0
    assert meta["posts_kept"] == frame.height and frame["source"].unique().to_list() == ["synthetic"]
    # every post asked for is accounted for: kept, or counted as an issue of its kind
    cache = [json.loads(line) for line in out.with_suffix(".cache.jsonl").read_text().splitlines()]
    assert sorted(r["call"] for r in cache) == [0, 1]
    assert meta["output_format"] == "json" and meta["temperature"] == 0.7  # the embedded defaults (bench/RESULTS.md)
    for record in cache:
        parsed = parse_answer(record["content"], 3, record["finish_reason"], "json")
        whole_answer = {"empty", "refusal", "invalid_json"} & set(parsed.issues)
        lost = sum(parsed.issues[k] for k in ("missing_items", "empty_items", "placeholder_items", "fragment_items", "echo_items"))
        assert whole_answer or len(parsed.posts) + lost == 3
    issues = sum(meta["parse_issues"].values())
    assert frame.height + issues >= 1
    assert f"posts kept {meta['posts_kept']} of 6" in result.stderr


@pytest.mark.slow
def test_kill_9_then_resume_loses_nothing_and_doubles_nothing(embedded_run, tmp_path):
    _, reference = embedded_run
    out = tmp_path / "syn.jsonl"
    cache = out.with_suffix(".cache.jsonl")
    env = {**{k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "smm4h_cli", "generate", *EMBEDDED_ARGS, "-o", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if cache.exists() and cache.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    finished = cache.read_text().count("\n")
    assert finished == 1
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["calls_cached"] == 1 and meta["calls"] == 2
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 2
    resumed, uninterrupted = read_records(out), read_records(reference)
    assert resumed["id"].is_unique().all()
    assert resumed.equals(uninterrupted)


def test_dedup_drop_removes_repeats_and_leaks_and_counts_them(train5):
    leak = train5.filter(pl.col("label") == 1)["text"][0]
    answer = f"1. our toddler said her first word today\n2. Our toddler said her FIRST word today!\n3. {leak}"
    with Scripted({0: [("content", answer)] * 2}) as server:
        flagged, summary = generate(options(n=3, per_call=3, base_url=server.url), train5)
        dropped, summary_drop = generate(options(n=3, per_call=3, base_url=server.url, dedup="drop"), train5)
    assert flagged["duplicate"].to_list() == [None, "exact", "train_exact"]
    assert flagged["duplicate_of"][1] == "syn-paper-0000-01"
    assert dropped["text"].to_list() == ["our toddler said her first word today"]
    assert summary.duplicates == summary_drop.duplicates == {"example_copy": 0, "train_exact": 1, "train_near": 0, "exact": 1, "near": 0}
    assert (summary.posts_kept, summary_drop.posts_kept) == (3, 1)


def test_auto_request_style_follows_the_model_not_the_transport(train5):
    # SmolLM2 on someone's llama.cpp or Ollama server needs what the embedded one needs: the plain
    # list request and a completion limit; other models get the paper's prompt and no limit.
    from smm4h_cli.generation.backends import Backend
    from smm4h_cli.generation.generate import EMBEDDED_MAX_TOKENS, plan_calls

    options = GenerateOptions(task=builtin_task(5), n=10)
    served_smollm = Backend("compatible", "smollm2:135m", "http://127.0.0.1:11434/v1", "smollm2:135m")
    other = Backend("compatible", "llama3.1", "http://127.0.0.1:11434/v1", "llama3.1")
    small = plan_calls(options, served_smollm, train5)[0].spec.request
    large = plan_calls(options, other, train5)[0].spec.request
    assert small["max_tokens"] == EMBEDDED_MAX_TOKENS and "max_tokens" not in large
    assert "output10" in large["messages"][0]["content"] and "output10" not in small["messages"][0]["content"]
    assert "extra_body" not in small  # repeat_penalty is llama.cpp's own field: embedded only
    explicit = plan_calls(GenerateOptions(task=builtin_task(5), n=10, request_style="paper"), served_smollm, train5)[0].spec.request
    assert "output10" in explicit["messages"][0]["content"]


# ------------------------------------------------------------------------------ hardening: odd answers, odd caches

def completion(content="1. a post", finish="stop", usage=None, **extra) -> str:
    """The raw JSON text of a 200 chat answer, with any field as odd as a test needs."""
    body = {
        "id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": usage if usage is not None else {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }
    body.update(extra)
    return json.dumps(body)


MALFORMED = [
    completion(content=["1. a", "2. b"]),
    completion(content=42),
    completion(usage={"prompt_tokens": "lots", "completion_tokens": 3}),
    completion(usage={"prompt_tokens": 3, "completion_tokens": -1}),
    completion(finish=7),
    completion(choices=[]),
    json.dumps({"id": "x", "object": "chat.completion"}),  # no choices at all
    completion(choices=[{"index": 0, "message": None, "finish_reason": "stop"}]),
    "<html>busy</html>",
    "[1, 2, 3]",
]


def test_malformed_answers_are_retried_never_cached(train5, tmp_path):
    script = {i: [("body", body)] for i, body in enumerate(MALFORMED)}
    script[len(MALFORMED)] = [("body", MALFORMED[0])] * 2  # malformed on every try: a failed call
    n = 10 * (len(MALFORMED) + 1)
    cache = tmp_path / "c.jsonl"
    with Scripted(script) as server:
        frame, summary = generate(options(n=n, base_url=server.url, tries=2, cache_path=cache), train5)
        assert all(server.attempts[i] == 2 for i in range(len(MALFORMED) + 1))
    assert summary.calls_failed == 1 and list(summary.errors) == ["malformed response (content is a list, not text)"]
    assert summary.calls_retried == len(MALFORMED) + 1
    assert frame.height == 10 * len(MALFORMED) and frame["text"].str.starts_with("call ").all()
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert sorted(r["call"] for r in lines) == list(range(len(MALFORMED)))
    assert all(isinstance(r["content"], str) and type(r["prompt_tokens"]) is int for r in lines)
    # the failed call is asked again, the rest come from the cache
    with Scripted(at=server.url) as server:
        again, summary2 = generate(options(n=n, base_url=server.url, cache_path=cache), train5)
        assert dict(server.attempts) == {len(MALFORMED): 1}
    assert summary2.cache_lines_ignored == 0 and again.height == n


def test_a_poisoned_cache_line_is_skipped_counted_and_the_call_made_again(train5, tmp_path):
    cache = tmp_path / "c.jsonl"
    with Scripted() as server:
        clean, _ = generate(options(n=50, base_url=server.url, cache_path=cache), train5)
    good = [json.loads(line) for line in cache.read_text().splitlines()]
    by_call = {r["call"]: r for r in good}
    poisoned = [
        {**by_call[1], "content": ["1. a", "2. b"]},
        {**by_call[2], "prompt_tokens": "lots"},
        {k: v for k, v in by_call[3].items() if k != "finish_reason"},
    ]
    lines = [json.dumps(r) for r in (by_call[0], by_call[4], *poisoned)] + ["not json {", "[1, 2]", '"text"']
    cache.write_text("\n".join(lines) + "\n")
    with Scripted(at=server.url) as server:
        frame, summary = generate(options(n=50, base_url=server.url, cache_path=cache), train5)
        assert dict(server.attempts) == {1: 1, 2: 1, 3: 1}
    assert summary.cache_lines_ignored == 6 and summary.calls_cached == 2
    assert frame.equals(clean)


def test_line_separators_in_an_answer_survive_the_cache(train5, tmp_path):
    answer = "1. a post\u2028with a line separator\n2. and\u2029 another\u0085 one"
    cache = tmp_path / "c.jsonl"
    with Scripted({0: [("content", answer)]}) as server:
        first, _ = generate(options(n=2, per_call=2, base_url=server.url, cache_path=cache), train5)
    with Scripted(at=server.url) as server:
        again, summary = generate(options(n=2, per_call=2, base_url=server.url, cache_path=cache), train5)
        assert sum(server.attempts.values()) == 0
    assert summary.cache_lines_ignored == 0 and again.equals(first)
    assert first["text"][0] == "a post\u2028with a line separator"


@pytest.mark.parametrize("junk", ["soon-ish", "Wed, 99 Foo 2015", "nan", "inf", "-inf", "1e999", "", "  "])
@pytest.mark.parametrize("header", ["retry-after", "retry-after-ms"])
def test_a_retry_after_header_that_is_neither_seconds_nor_a_date_is_no_wait(header, junk):
    from smm4h_cli.generation.engine import retry_after

    assert retry_after({header: junk}) is None


def test_retry_after_that_is_neither_seconds_nor_a_date_is_ignored(train5):
    from smm4h_cli.generation.engine import retry_after

    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after": "-3"}) == 0.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    with Scripted({0: [("429", "soon-ish"), ("429", "Wed, 99 Foo 2015")]}) as server:
        frame, summary = generate(options(n=10, base_url=server.url), train5)
        assert server.attempts[0] == 3
    assert frame.height == 10 and summary.calls_failed == 0


def test_an_echoed_api_key_is_written_nowhere(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = tmp_path / "syn.jsonl"
    cache = out.with_suffix(".cache.jsonl")
    # a cache line from an older version, holding the key, is redacted when it is read
    with Scripted() as server:
        from smm4h_cli.generation.backends import resolve_backend as resolve
        from smm4h_cli.generation.generate import plan_calls

        plan = plan_calls(options(n=30, base_url=server.url), resolve(None, server.url), read_records(TRAIN5, require_label=True))
    cache.write_text(json.dumps({
        "key": plan[2].spec.key, "call": 2, "content": f"1. the key {SECRET} again", "finish_reason": "stop",
        "prompt_tokens": 1, "completion_tokens": 1, "retries": 0,
    }) + "\n")
    script = {
        0: [("content", f"1. my key is {SECRET}\n2. Bearer {SECRET}")],
        1: [("error", 400, f"bad request from key {SECRET}")],
    }
    with Scripted(script, at=server.url) as server:  # the server the old line's key names
        result = cli("generate", "--n", "30", "--base-url", server.url, "-o", out, "--per-call", "10")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["text"] == "my key is ***" and any(r["text"] == "the key *** again" for r in rows)
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["errors"] == {"HTTP 400: Error code: 400 - bad request from key ***": 1}
    for path in tmp_path.iterdir():
        written = path.read_text().splitlines()[1:] if path == cache else path.read_text()  # the old line stays as it was
        assert written and SECRET not in str(written), path
    assert SECRET not in result.stdout + result.stderr


# ------------------------------------------------------------------------------ hardening: the files a run writes

def test_outputs_that_are_inputs_or_each_other_are_refused_before_any_call(cli, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_bytes(TRAIN5.read_bytes())
    definitions = tmp_path / "task.yaml"
    definitions.write_text("definition: Label 1 posts are about a child's asthma.\n")
    attributes = tmp_path / "attrs.yaml"
    attributes.write_text("season: [winter, spring]\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(train)
    out = tmp_path / "syn.jsonl"
    own = ["--definitions", definitions, "--train", train, "--strategy", "attributes", "--attributes", attributes]
    cases = [
        (["--train", train, "-o", out, "--cache", train], "--cache", "--train"),
        (["--train", train, "-o", out, "--cache", link], "--cache", "--train"),
        (["--train", train, "-o", train, "--force"], "--out", "--train"),
        ([*own, "-o", out, "--cache", definitions], "--cache", "--definitions"),
        ([*own, "-o", out, "--cache", attributes], "--cache", "--attributes"),
        ([*own, "-o", "-", "--cache", attributes], "--cache", "--attributes"),
        (["--train", train, "-o", out, "--cache", out], "--cache", "--out"),
        (["--train", train, "-o", out, "--cache", out.with_suffix(".meta.json")], "--cache", "the summary"),
    ]
    before = {p: p.read_bytes() for p in (train, definitions, attributes)}
    with Scripted() as server:
        for args, first, second in cases:
            result = cli("generate", "--n", "10", "--base-url", server.url, *args)
            assert result.exit_code == 2, (args, result.stderr)
            message = " ".join(result.stderr.split())
            assert first in message and second in message, message
        assert sum(server.attempts.values()) == 0
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attrs.yaml", "link.jsonl", "task.yaml", "train.jsonl"]


def test_unwritable_outputs_are_found_before_any_call(cli, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    meta_folder = tmp_path / "m.meta.json"
    meta_folder.mkdir()
    cases = [
        ["-o", a_file / "out.jsonl"],  # the folder is a file
        ["-o", tmp_path / "ok.jsonl", "--cache", folder],
        ["-o", tmp_path / "ok.jsonl", "--cache", a_file / "c.jsonl"],
        ["-o", "-", "--cache", a_file / "c.jsonl"],
        ["-o", tmp_path / "m.jsonl"],  # its summary m.meta.json is a folder
    ]
    with Scripted() as server:
        for args in cases:
            result = cli("generate", "--n", "10", "--base-url", server.url, *args)
            assert result.exit_code == 2, (args, result.stderr)
            assert "Traceback" not in result.stderr and "Error:" in result.stderr
        assert sum(server.attempts.values()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder.jsonl", "m.meta.json"]


_HOLD = "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"


def test_a_second_run_on_the_same_output_or_cache_is_refused(cli, tmp_path):
    out = tmp_path / "syn.jsonl"
    with Scripted() as server:
        for lock, args in [
            (tmp_path / "syn.jsonl.lock", ["-o", out]),
            (tmp_path / "shared.jsonl.lock", ["-o", tmp_path / "other.jsonl", "--cache", tmp_path / "shared.jsonl"]),
        ]:
            holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
            try:
                assert holder.stdout.readline() == "held\n"  # another process is writing
                result = cli("generate", "--n", "10", "--base-url", server.url, *args)
            finally:
                holder.kill()
                holder.wait()
            assert result.exit_code == 2
            message = " ".join(result.stderr.split())
            assert "another smm4h generate is writing" in message and str(lock) in message, message
        assert sum(server.attempts.values()) == 0
        assert not out.exists()
        # the lock files the killed holders left behind do not block: flock locks die with their process
        result = cli("generate", "--n", "10", "--base-url", server.url, "-o", out)
        assert result.exit_code == 0, result.stderr
        assert server.attempts[0] == 1
    assert not (tmp_path / "syn.jsonl.lock").exists() and not (tmp_path / "syn.cache.jsonl.lock").exists()


def test_a_run_where_no_post_could_be_parsed_writes_nothing_and_says_why(cli, tmp_path):
    out = tmp_path / "syn.jsonl"
    script = {i: [("content", "Tweets are short messages.")] for i in range(2)}
    with Scripted(script) as server:
        result = cli("generate", "--n", "20", "--base-url", server.url, "-o", out)
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "no post could be parsed" in message and "no_list 2" in message and "--request-style list" in message
    assert not out.exists() and not out.with_suffix(".meta.json").exists()
    assert len(out.with_suffix(".cache.jsonl").read_text().splitlines()) == 2  # the answers stay cached


@pytest.mark.slow
def test_the_embedded_server_dies_with_its_run_even_mid_call(tmp_path):
    # A run stopped by SIGTERM while the server is generating must not leave the server behind.
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, threading, time\n"
        "from openai import OpenAI\n"
        "from smm4h_cli.generation.backends import EMBEDDED_ALIAS, embedded_server\n"
        "with embedded_server() as url:\n"
        "    import psutil\n"
        "    server = [c.pid for c in psutil.Process().children()][0]\n"
        "    client = OpenAI(base_url=url, api_key='none')\n"
        "    ask = lambda: client.chat.completions.create(model=EMBEDDED_ALIAS, max_tokens=2000,\n"
        "        messages=[{'role': 'user', 'content': 'Write a very long story about a dog.'}])\n"
        "    threading.Thread(target=ask, daemon=True).start()\n"
        "    time.sleep(2)\n"
        "    print(server, flush=True)\n"
        "    time.sleep(600)\n"
    )
    import psutil

    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    server = int(run.stdout.readline())
    run.send_signal(signal.SIGTERM)
    run.wait(30)

    def alive() -> bool:
        try:
            return psutil.Process(server).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 10  # killed at once, not after its generation ends
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive():
        psutil.Process(server).kill()
        pytest.fail("the embedded server outlived the run that started it")



@pytest.mark.parametrize("flag", ["--timeout", "--price-in", "--price-out", "--poll-interval", "--temperature", "--similarity"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_float_options_must_be_finite(cli, tmp_path, flag, value):
    """Failed before: nan passed every range check (--timeout nan: a traceback, --price-in nan: "cost_usd": NaN in meta.json)."""
    with Scripted() as server:
        result = cli("generate", "--n", "3", "--per-call", "3", "--base-url", server.url, "--output-format", "list",
                     flag, value, "-o", tmp_path / "s.jsonl")
    assert result.exit_code == 2, result.output
    assert f"{flag} must be" in result.stderr and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["backoff", "repeat_penalty", "timeout", "poll_interval"])
def test_float_library_options_must_be_finite(name):
    with pytest.raises(InputError, match="finite"):
        options(**{name: float("nan")})


def test_a_json_run_where_no_post_could_be_parsed_names_the_json_format(cli, tmp_path):
    """Failed before: the message said the model missed "the numbered list" of a run that asked for JSON."""
    out = tmp_path / "syn.jsonl"
    script = {i: [("content", "Tweets are short messages.")] * 2 for i in range(2)}  # call 0's first answers the probe
    with Scripted(script, json_forms=("json_schema",)) as server:
        result = cli("generate", "--n", "20", "--base-url", server.url, "--output-format", "json", "-o", out)
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "invalid_json 2" in message and '{"posts": [...]}' in message and "--output-format list" in message
    assert "numbered list asked for" not in message and not out.exists()


def test_attributes_with_the_paper_strategy_is_refused(cli, tmp_path):
    """Failed before: --attributes FILE was silently ignored by --strategy paper."""
    attributes = tmp_path / "a.yaml"
    attributes.write_text("tone: [calm, angry]\n")
    with Scripted() as server:
        result = cli("generate", "--n", "10", "--base-url", server.url, "--output-format", "list", "--attributes", attributes,
                     "-o", tmp_path / "s.jsonl")
    assert result.exit_code == 2 and "--strategy attributes" in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml"]
    assert cli("generate", "--attributes", attributes, "--show-attributes").exit_code == 0  # printing a file is no run


def test_the_cache_key_names_the_server_that_answered(train5, tmp_path):
    """Failed before: the key hashed the request only, so the same model name on another --base-url got the first server's answers."""
    cache = tmp_path / "c.jsonl"
    run = dict(n=6, per_call=3, output_format="list", cache_path=cache, model="same")
    with Scripted(models=("same",)) as first, Scripted(models=("same",)) as second:
        a, _ = generate(options(base_url=first.url, **run), train5)
        b, summary = generate(options(base_url=second.url, **run), train5)
        assert sum(second.attempts.values()) == 2 and summary.calls_cached == 0  # asked anew, not answered from the cache
        again, resumed = generate(options(base_url=first.url + "/", **run), train5)  # the same server, spelled otherwise
        assert sum(first.attempts.values()) == 2 and resumed.calls_cached == 2  # resume still works
    assert again["text"].to_list() == a["text"].to_list() and len(cache.read_text().splitlines()) == 4


def test_the_cache_key_of_the_embedded_model_holds_its_file_and_server_settings(train5, monkeypatch):
    import dataclasses

    from smm4h_cli.generation import backends
    from smm4h_cli.generation.plan import Planner
    from smm4h_cli.generation.prompts import request_hash
    from smm4h_cli.generation.structured import OutputFormat
    from smm4h_cli.models import EMBEDDED_SMOLLM2, smollm2_path

    embedded = backends.Backend("embedded", EMBEDDED_SMOLLM2, None, backends.EMBEDDED_ALIAS)
    identity = backends.cache_identity(embedded)
    assert (identity["embedded"], identity["bytes"]) == (smollm2_path().name, smollm2_path().stat().st_size)

    def key(backend, **kw):
        return Planner(options(output_format="list", **kw), backend, train5, OutputFormat("list")).call(0, 3).spec

    before = key(embedded)
    assert key(dataclasses.replace(embedded, base_url="http://127.0.0.1:1234/v1")).key == before.key  # not the server's port
    monkeypatch.setattr(backends, "EMBEDDED_SERVER_VERSION", backends.EMBEDDED_SERVER_VERSION + 1)
    assert key(embedded).key != before.key and key(embedded).request == before.request  # in the key, never sent
    # the OpenAI API keeps the key of the versions before (no paid call made again); other servers do not
    openai = backends.Backend("openai", "gpt-4o", backends.OPENAI_URL, "gpt-4o")
    assert key(openai).key == request_hash(key(openai).request)
    local = backends.Backend("compatible", "gpt-4o", "http://localhost:8000/v1", "gpt-4o")
    assert key(local).key != key(openai).key and key(local).key == key(dataclasses.replace(local, base_url="HTTP://localhost:8000/v1/")).key


def _dedup_full_matrix(texts, train_texts, train_ids, ids, threshold):
    """The flags as computed before blocks: the whole N x N matrix at once (the reference)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    from smm4h_cli.generation.dedup import normalise

    norm, train_norm = [normalise(t) for t in texts], [normalise(t) for t in train_texts]
    train_index = {}
    for j, t in enumerate(train_norm):
        train_index.setdefault(t, j)
    matrix = TfidfVectorizer(analyzer="char_wb", ngram_range=(4, 4), dtype=np.float32).fit_transform(norm + train_norm)
    syn, train = matrix[: len(norm)], matrix[len(norm):]
    sim_self, sim_train = (syn @ syn.T).toarray(), (syn @ train.T).toarray()
    kinds, of, first_seen = [None] * len(texts), [None] * len(texts), {}
    for i, t in enumerate(norm):
        if t and t in train_index:
            kinds[i], of[i] = "train_exact", train_ids[train_index[t]]
        elif sim_train[i].max() >= threshold:
            kinds[i], of[i] = "train_near", train_ids[int(sim_train[i].argmax())]
        elif t and t in first_seen:
            kinds[i], of[i] = "exact", ids[first_seen[t]]
        elif i > 0 and sim_self[i, :i].max() >= threshold:
            kinds[i], of[i] = "near", ids[int(sim_self[i, :i].argmax())]
        if t:
            first_seen.setdefault(t, i)
    return kinds, of


@pytest.mark.parametrize("threshold", [0.5, 0.9])
def test_dedup_in_row_blocks_flags_exactly_what_the_whole_matrix_flags(train5, monkeypatch, threshold):
    """Failed before: the whole N x N similarity matrix was made dense (5 GB for 20,000 posts, 30 GB for 50,000)."""
    import random

    from scipy.sparse._compressed import _cs_matrix

    rng = random.Random(3)
    train_texts, train_ids = train5["text"].to_list(), train5["id"].to_list()
    texts = []
    for i in range(300):  # repeats, near repeats (a word changed), training posts copied and changed, and fresh posts
        pick = rng.random()
        if texts and pick < 0.25:
            words = rng.choice(texts).split()
            words[rng.randrange(len(words))] = rng.choice(["today", "again", "lol", "sigh"])
            texts.append(" ".join(words))
        elif pick < 0.35:
            texts.append(rng.choice(train_texts) + rng.choice(["", " !!", " #autism"]))
        elif pick < 0.4 and texts:
            texts.append(rng.choice(texts))
        else:
            texts.append(fake_post(i, 1))
    ids = [f"s{i}" for i in range(len(texts))]
    expected = _dedup_full_matrix(texts, train_texts, train_ids, ids, threshold)
    assert len({k for k in expected[0] if k}) == 4  # every kind but example_copy occurs
    shapes = []
    dense = _cs_matrix.toarray
    monkeypatch.setattr(_cs_matrix, "toarray", lambda self, *a, **kw: shapes.append(self.shape) or dense(self, *a, **kw))
    for rows in (1, 7, 64, None):
        shapes.clear()
        kinds, of, _ = find_duplicates(texts, train_texts, train_ids, ids, threshold, block_rows=rows)
        assert (kinds, of) == expected, rows
        if rows is not None:
            assert max(r for r, _ in shapes) == rows and max(r * c for r, c in shapes) <= rows * (len(texts) + len(train_texts))
