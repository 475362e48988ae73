"""`smm4h study` end to end on tiny data, with the real embedded models and server."""

from __future__ import annotations

import html as html_lib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from smm4h_cli.study import StudyOptions, run_study

from conftest import ROOT, write_jsonl

slow = pytest.mark.slow  # the tests that run a real study; the report's own tests are fast

POS = [
    "my son was diagnosed with autism today and we are still taking it in",
    "our daughter's asthma flared up again, third inhaler this month",
    "speech therapist says my 3yo's delayed speech is improving slowly",
    "got the ADHD diagnosis for my boy, now we wait for the school plan",
    "my little one with asthma finally slept through the night",
    "parenting a kid with autism means celebrating every tiny step",
    "he has ADHD and today he finished his homework on his own, proud mum",
    "the nebulizer is our best friend, my kid's asthma hates winter",
    "our twins both got the autism dx, the waitlist was two years",
    "my daughter's speech delay means we use signs at home, she loves it",
    "asthma attack at 2am, my son is ok now, I am not",
    "my 6 year old has ADHD and the new meds seem to help",
]
NEG = [
    "autism awareness month starts today, light it up blue",
    "a celebrity's son has ADHD says the news, why is that our business",
    "the weather is lovely today, walked to the park",
    "baby kicked all night long, 30 weeks and counting",
    "my friend's nephew has asthma, sending them love",
    "new study links screen time and speech delay https://t.co/abc",
    "I was so ADHD today lol forgot my keys three times",
    "third trimester heartburn is no joke",
    "signed the petition for inhalers in schools",
    "anyone have a good stroller recommendation?",
    "the ultrasound tech said everything looks great",
    "my own adult ADHD diagnosis finally makes sense of my twenties",
    "our neighbour's kid is loud but sweet",
    "cravings tonight: pickles and ice cream, classic",
    "reading about autism research funding, interesting thread",
    "my sister's daughter has a cough, hope it's nothing",
    "nursery is finally painted, yellow won",
    "flu season again, wash your hands everyone",
    "documentary about speech therapy was moving",
    "maternity leave starts friday, can't wait",
    "my mother in law keeps sending baby name lists",
    "the doctor said the baby is head down",
    "school fundraiser for asthma research this weekend",
    "so tired of people using autism as an insult",
]


def _rows(texts, label, prefix):
    return [{"id": f"{prefix}{i}", "text": t, "label": label} for i, t in enumerate(texts)]


def study_files(d: Path) -> dict[str, Path]:
    """The tiny study's train, validation and test files in folder ``d`` (shared with test_ray and test_dose)."""
    return {
        "train": write_jsonl(d / "train.jsonl", _rows(POS[:8], 1, "p") + _rows(NEG[:16], 0, "n")),
        "validation": write_jsonl(d / "validation.jsonl", _rows(POS[8:10], 1, "vp") + _rows(NEG[16:20], 0, "vn")),
        "test": write_jsonl(d / "test.jsonl", _rows(POS[10:], 1, "tp") + _rows(NEG[20:], 0, "tn")),
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    return study_files(tmp_path_factory.mktemp("data"))


def _options(data, out: Path, **changes) -> StudyOptions:
    base = dict(
        out=out, task=5, train=data["train"], validation=data["validation"], test=data["test"],
        n=20, epochs=1, batch_size=8, max_length=48, sample=0, k=2, bootstrap=200, device="cpu",
    )
    return StudyOptions(**{**base, **changes})


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    events = []
    result = run_study(_options(data, out), events.append)
    return out, result, events


@slow
def test_every_file_and_section(finished):
    out, result, events = finished
    for rel in [
        "synthetic/paper.jsonl", "synthetic/paper.meta.json", "tables/table2.json", "tables/table2.csv",
        "tables/table3.json", "tables/table3.csv", "tables/diversity.csv", "tables/generation.csv", "tables/data.csv",
        "figure2/tsne.png", "figure2/metrics.json", "figure2/points.parquet",
        "runs/baseline/summary.json", "runs/synthetic-paper/summary.json",
        "runs/baseline/seed-0/test_predictions.jsonl", "report.md", "report.html", "steps.json",
    ]:
        assert (out / rel).exists(), rel
    md = result.report_md.read_text()
    for heading in ["## Conclusion", "## Setting", "## Table 2", "## Table 3", "## Figure 2", "## Diversity in embedding space", "## Cost of generation"]:
        assert heading in md
    assert {e.state for e in events} == {"running", "done"}
    assert result.skipped == []


@slow
def test_report_numbers_equal_step_files(finished):
    out, result, _ = finished
    md = result.report_md.read_text()
    table2 = json.loads((out / "tables/table2.json").read_text())
    baseline = next(a for a in table2["arms"] if a["arm"] == "baseline")
    row = next(line for line in md.splitlines() if line.startswith("| baseline |"))
    assert f"{baseline['f1']:.3f}" in row and f"{baseline['recall']:.3f}" in row
    pair = table2["pairs"][0]
    assert f"{pair['f1_diff']:+.3f}" in md and f"[{pair['ci_low']:+.3f}, {pair['ci_high']:+.3f}]" in md
    for r in json.loads((out / "tables/table3.json").read_text()):
        line = next(line for line in md.splitlines() if line.startswith(f"| {r['group']} |"))
        assert f"{r['unique_3grams']:,}" in line
    metrics = json.loads((out / "figure2/metrics.json").read_text())
    for g in metrics["groups"]:
        assert g["summary"] in md
    meta = json.loads((out / "synthetic/paper.meta.json").read_text())
    gen_line = next(line for line in md.splitlines() if line.startswith("| paper |"))
    assert f"{meta['posts_kept']:,}" in gen_line and f"{meta['completion_tokens']:,}" in gen_line
    # the conclusion is written from the same numbers
    assert f"{baseline['f1']:.3f}" in result.numbers["conclusion"]


@slow
def test_html_is_self_contained(finished):
    _, result, _ = finished
    page = result.report_html.read_text()
    assert "<table>" in page and 'src="data:image/png;base64,' in page
    assert 'src="figure2/' not in page  # no image left pointing at a file beside the page


@pytest.fixture
def torch_threads():
    """Puts torch's thread count back after a test that sets it (it is global to the process)."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@slow
def test_unchanged_rerun_skips_everything(finished, data, torch_threads):
    out, first, _ = finished
    again = run_study(_options(data, out))
    assert again.ran == [] and set(again.skipped) == set(first.ran)
    # the thread count is not in any fingerprint: it changes how fast, not what is computed
    again = run_study(_options(data, out, threads=1))
    assert again.ran == [] and set(again.skipped) == set(first.ran)


@slow
def test_changed_option_redoes_only_what_depends_on_it(finished, data, tmp_path):
    out, first, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    synthetic_mtime = (copy / "synthetic/paper.jsonl").stat().st_mtime_ns
    model_mtime = (copy / "runs/baseline/seed-0/metrics.json").stat().st_mtime_ns
    result = run_study(_options(data, copy, k=3))
    assert result.ran == ["embed-cluster (Figure 2)"]
    assert json.loads((copy / "figure2/metrics.json").read_text())["settings"]["k"] == 3
    assert (copy / "synthetic/paper.jsonl").stat().st_mtime_ns == synthetic_mtime
    assert (copy / "runs/baseline/seed-0/metrics.json").stat().st_mtime_ns == model_mtime


@slow
def test_in_a_log_file_the_running_step_reports_plain_progress_lines(finished, data, tmp_path):
    # the study's progress is the one protocol: ProgressEvents of the running step (its name as
    # the stage), shown by the CLI's ProgressDisplay; in a log file, plain lines between the step lines
    import io

    from rich.console import Console

    from smm4h_cli.cli._progress import ProgressDisplay
    from smm4h_cli.progress import ProgressEvent

    out, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    events: list[ProgressEvent] = []
    buf = io.StringIO()
    with ProgressDisplay(False, Console(file=buf, force_terminal=False, width=200)) as show:
        run_study(_options(data, copy, k=3), progress=lambda e: (events.append(e), show(e)))
    assert events and {e.stage for e in events} == {"embed-cluster (Figure 2)"}
    lines = buf.getvalue().splitlines()
    assert lines and all(line.startswith("embed-cluster (Figure 2): ") for line in lines)


def test_one_mapping_from_study_options_to_training_options(tmp_path):
    options = StudyOptions(classifier="m", epochs=3, lr=1e-4, batch_size=4, max_length=64, device="cpu", threads=2)
    arms = {"baseline": "none", "synthetic-paper": "none", "class-weight": "class-weight", "oversample": "oversample"}
    trains = {arm: options.train_options(arm, tmp_path / arm) for arm in arms}
    assert {arm: (t.out, t.balance, t.resume, t.force) for arm, t in trains.items()} == {
        arm: (tmp_path / arm, balance, False, True) for arm, balance in arms.items()
    }
    assert {arm: (t.model, t.epochs, t.lr, t.batch_size, t.max_length, t.device, t.threads) for arm, t in trains.items()} == {
        arm: ("m", 3, 1e-4, 4, 64, "cpu", 2) for arm in arms
    }
    assert (lambda t: (t.resume, t.force))(options.train_options("baseline", tmp_path, resume=True)) == (True, False)


@slow
def test_a_new_seed_trains_alone_and_a_new_test_file_only_predicts(finished, data, tmp_path, torch_threads):
    out, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    seed0 = copy / "runs/baseline/seed-0"

    def stamp(path: Path) -> int:
        return path.stat().st_mtime_ns

    weights0 = stamp(seed0 / "model.safetensors")
    synthetic0 = stamp(copy / "runs/synthetic-paper/seed-0/model.safetensors")
    result = run_study(_options(data, copy, seeds=(0, 1)))
    assert {"train baseline", "train synthetic-paper", "compare (Table 2)"} <= set(result.ran)
    assert "generate paper" in result.skipped
    assert stamp(seed0 / "model.safetensors") == weights0  # seed 0 was kept, not retrained
    assert stamp(copy / "runs/synthetic-paper/seed-0/model.safetensors") == synthetic0
    summary = json.loads((copy / "runs/baseline/summary.json").read_text())
    assert summary["seeds"] == [0, 1] and set(summary["runs"]) == {"0", "1"}
    assert summary["best_f1_std"] is not None  # two seeds: a spread to report

    # a different test file: the saved models predict it; nothing is retrained
    test2 = write_jsonl(tmp_path / "test2.jsonl", _rows(POS[9:], 1, "t2p") + _rows(NEG[19:], 0, "t2n"))
    result = run_study(_options({**data, "test": test2}, copy, seeds=(0, 1)))
    assert "train baseline" in result.ran
    assert stamp(seed0 / "model.safetensors") == weights0
    predicted = [json.loads(line) for line in (seed0 / "test_predictions.jsonl").read_text().splitlines()]
    assert len(predicted) == len(POS[9:]) + len(NEG[19:])

    # fewer seeds: the folder keeps the study's seeds only (what `smm4h compare runs/baseline` reads)
    result = run_study(_options({**data, "test": test2}, copy, seeds=(0,)))
    assert "train baseline" in result.ran and not (copy / "runs/baseline/seed-1").exists()
    assert stamp(seed0 / "model.safetensors") == weights0

    # other settings: every seed is retrained, with the threads asked for
    result = run_study(_options({**data, "test": test2}, copy, seeds=(0,), epochs=2, threads=1))
    assert stamp(seed0 / "model.safetensors") != weights0
    assert json.loads((copy / "runs/baseline/summary.json").read_text())["config"]["threads"] == 1


@slow
def test_resume_after_a_killed_step(data, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [
        sys.executable, "-m", "smm4h_cli", "study", "--out", str(out), "--train", str(data["train"]),
        "--validation", str(data["validation"]), "--test", str(data["test"]), "--n", "20", "--epochs", "2",
        "--batch-size", "8", "--max-length", "48", "--sample", "0", "--k", "2", "--device", "cpu", "--quiet",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / "steps.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if state.exists():
            try:
                steps = json.loads(state.read_text())
            except json.JSONDecodeError:
                steps = {}
            if steps.get("train baseline", {}).get("done") is False:
                break
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    else:
        pytest.fail("the study never reached its training step")
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    synthetic_mtime = (out / "synthetic/paper.jsonl").stat().st_mtime_ns
    result = run_study(_options(data, out, epochs=2))
    assert "generate paper" in result.skipped and "ngrams (Table 3)" in result.skipped
    assert "train baseline" in result.ran and "compare (Table 2)" in result.ran
    assert (out / "synthetic/paper.jsonl").stat().st_mtime_ns == synthetic_mtime
    assert result.report_html.exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (make test installs it where apt-get can)")
def test_html_renders_in_headless_chromium(finished, tmp_path):
    from PIL import Image

    _, result, _ = finished
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1100,4200",
            "--hide-scrollbars", result.report_html.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    # Figure 2 draws its groups in saturated colours; text and table borders are grey.
    saturated = (pixels.max(axis=1) - pixels.min(axis=1)) > 80
    assert saturated.sum() > 500, "no figure visible in the screenshot"
    # the table header background (#f0f0f0) shows that the tables were rendered as tables
    assert (np.abs(pixels - 240).max(axis=1) <= 2).sum() > 1000


def test_a_step_that_reports_itself_incomplete_runs_again_as_a_resume(tmp_path):
    # A generation with failed calls returns False: it stays not done, and the next run goes on
    # with it (resume=True: the call cache answers the finished calls) instead of skipping it.
    from smm4h_cli.study.steps import Steps as _Steps

    target = tmp_path / "synthetic.jsonl"
    calls: list[bool] = []

    def step(resume: bool) -> bool:
        calls.append(resume)
        target.write_text("{}\n")
        return len(calls) > 1  # incomplete the first time, complete the second

    first = _Steps(tmp_path, 1, force=False, on_event=None)
    first.run("generate paper", {"n": 10}, [target], step)
    assert json.loads((tmp_path / "steps.json").read_text())["generate paper"]["done"] is False
    second = _Steps(tmp_path, 1, force=False, on_event=None)
    second.run("generate paper", {"n": 10}, [target], step)
    assert calls == [False, True] and second.ran == ["generate paper"]
    third = _Steps(tmp_path, 1, force=False, on_event=None)
    third.run("generate paper", {"n": 10}, [target], step)
    assert calls == [False, True] and third.skipped == ["generate paper"]


@slow
def test_a_finished_study_reruns_without_its_generator(data, tmp_path):
    # A study generated by a server (here the real llama.cpp server, addressed as any
    # OpenAI-compatible one) re-runs after that server is gone, as long as nothing needs
    # generating; when a generation must run, it stops before any work, saying how to fix it.
    from smm4h_cli.errors import InputError
    from smm4h_cli.generation.backends import EMBEDDED_ALIAS, embedded_server

    out = tmp_path / "s"
    settings = dict(max_tokens=300)  # no --generator: the server's own (first) model
    with embedded_server() as url:
        first = run_study(_options(data, out, base_url=url, **settings))
    meta = json.loads((out / "synthetic/paper.meta.json").read_text())
    assert (meta["backend"], meta["model"]) == ("compatible", EMBEDDED_ALIAS) and "generate paper" in first.ran

    # the server has stopped: a changed clustering is redone, generation is not needed
    again = run_study(_options(data, out, base_url=url, k=3, **settings))
    assert again.ran == ["embed-cluster (Figure 2)"] and "generate paper" in again.skipped

    # more posts need the generator: exit-2 error before anything is written
    with pytest.raises(InputError, match="cannot reach the server"):
        run_study(_options(data, tmp_path / "fresh", base_url=url, **settings))
    assert not (tmp_path / "fresh").exists()
    with pytest.raises(InputError, match="cannot reach the server"):
        run_study(_options(data, out, base_url=url, **{**settings, "n": 30}))
    assert json.loads((out / "steps.json").read_text())["generate paper"]["done"] is True


@slow
def test_the_environment_does_not_silently_switch_the_generator(finished, data, tmp_path, monkeypatch):
    # The study's posts came from the embedded model because no key was set. With a key now set
    # and no --generator, a run that must generate would use (and pay) OpenAI: it refuses, before
    # contacting anything, and changes nothing.
    out, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    state = (copy / "steps.json").read_text()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    from smm4h_cli.errors import InputError

    with pytest.raises(InputError, match=r"generated by embedded:SmolLM2.*--generator"):
        run_study(_options(data, copy))
    assert (copy / "steps.json").read_text() == state
    # naming the generator is the way to mean it (here the embedded one: nothing to regenerate)
    again = run_study(_options(data, copy, generator="embedded"))
    assert "generate paper" in again.skipped


# ------------------------------------------------------------------ the report: data shows, never runs
#
# Fast: the step files of a study are written from crafted values (the real compare and n-gram
# functions, a hand-made metrics.json), and write_report is called on them directly.

SECRET = "SMM4H-SECRET-7f3a91c2 the content of a local file that must never reach the report"


def _hostile_posts(secret: Path) -> list[str]:
    """One synthetic post per way a post could make the HTML fetch, embed or run something."""
    uri = secret.as_uri()
    return [
        f"![x]({secret}) my son has autism",  # Markdown image, absolute path
        "![x](../secret.txt) my daughter has asthma",  # relative to the study folder
        f"<img src=\"{uri}\"> raw html image",
        "<script>alert('report')</script> raw html script",
        f"[a link]({uri}) and [another](javascript:alert(1))",
        f"![ref][s]\n\n[s]: {secret}\n",  # a reference-style image, its definition on its own line
        f"<{uri}> and <https://example.com/pixel.png> autolinks",
        f"<iframe src=\"{uri}\"></iframe>",
        "# a heading? | a cell? `code` *stars* _under_ ~strike~ $math$ &amp; \\[escaped]",
        "1. an ordered list item?",
    ]


def _crafted_report(tmp_path: Path, posts: list[str], model: str = "m"):
    """Write the step files a finished study leaves (crafted values) and call write_report on them.

    The report shows five closest pairs: posts 0, 2, 4, ... as the synthetic post of each, posts
    1, 3, 5, ... as its nearest real post (so up to ten posts show).
    """
    import polars as pl
    from PIL import Image

    from smm4h_cli.analysis.groups import groups_from_frames
    from smm4h_cli.analysis.ngrams import NgramOptions, ngram_table
    from smm4h_cli.study.report import write_report
    from smm4h_cli.training.compare import compare

    out = tmp_path / "study"
    (out / "tables").mkdir(parents=True)
    (out / "figure2").mkdir()
    (out / "synthetic").mkdir()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out / "figure2" / "tsne.png")
    frames = {
        "train": pl.DataFrame(_rows(POS[:8], 1, "p") + _rows(NEG[:16], 0, "n")),
        "validation": pl.DataFrame(_rows(POS[8:10], 1, "vp") + _rows(NEG[16:20], 0, "vn")),
        "test": pl.DataFrame(_rows(POS[10:], 1, "tp") + _rows(NEG[20:], 0, "tn")),
    }
    paths = {split: tmp_path / "data" / f"{split}.jsonl" for split in frames}
    synthetic = out / "synthetic" / "paper.jsonl"
    write_jsonl(synthetic, [{"id": f"s{i}", "text": t, "label": 1, "source": "synthetic"} for i, t in enumerate(posts)])
    (out / "synthetic" / "paper.meta.json").write_text(json.dumps({
        "model": model, "backend": "compatible", "calls": 2, "calls_failed": 0, "posts_kept": len(posts),
        "parse_issues": {}, "duplicates": {}, "prompt_tokens": 100, "completion_tokens": 200, "cost_usd": None, "seconds": 1.0,
    }))
    test = frames["test"]
    arms = ["baseline", "synthetic-paper"]
    preds = [
        test.with_columns(pred=pl.col("label"), prob=pl.col("label").cast(pl.Float64)),
        test.with_columns(pred=pl.lit(0, pl.Int64), prob=pl.lit(0.2)),
    ]
    table2 = compare([[f] for f in preds], arms, bootstrap=200, seed=0).to_dict()
    (out / "tables" / "table2.json").write_text(json.dumps(table2))
    named = [("train", frames["train"]), ("synthetic paper", pl.DataFrame({"text": posts, "label": [1] * len(posts)}))]
    (out / "tables" / "table3.json").write_text(json.dumps(ngram_table(groups_from_frames(named, by_label=True), NgramOptions(sample=0))))
    group = {
        "posts": 8, "vendi": 2.0, "centroid_distance": 0.5, "pairwise_distance": 0.7, "clusters": 2,
        "positive_coverage": None, "positive_clusters_reached": None, "positive_clusters": None, "cluster_entropy": 1.0, "copy_share": None,
    }
    padded = posts + [POS[0]] * (len(posts) % 2)
    metrics = {
        "settings": {"model": "embedded:all-MiniLM-L6-v2", "k": 2, "vendi_n": 8, "copy_threshold": 0.95, "real_positives_vendi": 3.0},
        "groups": [
            {**group, "group": "train/label 1", "role": "real positives", "summary": "train/label 1: Vendi 3.0 at n = 8"},
            {**group, "group": "synthetic paper", "role": "synthetic", "positive_coverage": 0.5, "positive_clusters_reached": 1,
             "positive_clusters": 2, "copy_share": 0.0, "summary": "synthetic paper: Vendi 2.0 vs 3.0 for real positives at n = 8"},
        ],
        "closest_pairs": [{"similarity": 0.9, "synthetic_text": t, "real_text": r} for t, r in zip(padded[::2], padded[1::2])],
    }
    (out / "figure2" / "metrics.json").write_text(json.dumps(metrics))
    for arm in arms:
        (out / "runs" / arm).mkdir(parents=True)
        (out / "runs" / arm / "summary.json").write_text(json.dumps({"model": "embedded:all-MiniLM-L6-v2"}))
    options = StudyOptions(out=out, task=5, train=paths["train"], validation=paths["validation"], test=paths["test"], n=len(posts))
    report_md, report_html, _ = write_report(out, options, paths, frames, {"paper": synthetic}, arms)
    return report_md.read_text(encoding="utf-8"), report_html.read_text(encoding="utf-8")


def _planted_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET, encoding="utf-8")
    return secret


def _leaks(page: str) -> list[str]:
    import base64

    raw = SECRET.encode()
    # base64 of the file at any of the three alignments a data URI could start it at
    encoded = [base64.b64encode(raw[i:])[:24].decode() for i in range(3)]
    return [s for s in ["SMM4H-SECRET-7f3a91c2", *encoded] if s in page]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _assert_only_the_figure(page: str) -> None:
    """The page has one image, the study's figure as a data URI, and no link, script, frame or
    attribute pointing anywhere."""
    parser = _Tags()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    assert tags.count("img") == 1, tags
    assert not {"a", "script", "iframe", "object", "embed", "link", "base", "form"} & set(tags)
    for tag, attrs in parser.tags:
        for name, value in attrs.items():
            if tag == "img" and name == "src":
                assert value.startswith("data:image/png;base64,")
            else:
                assert name in ("alt", "lang", "charset", "style"), (tag, name)


def _tokens(markdown: str) -> list:
    """Every token of ``markdown`` as a permissive CommonMark renderer (raw HTML on) reads it."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark", {"html": True}).enable("table").parse(markdown)
    return tokens + [child for t in tokens for child in (t.children or [])]


def test_posts_with_markup_show_as_text_and_embed_nothing(tmp_path):
    secret = _planted_secret(tmp_path)
    posts = _hostile_posts(secret)
    md, page = _crafted_report(tmp_path, posts)

    assert _leaks(page) == []
    _assert_only_the_figure(page)
    # report.md: read by any CommonMark renderer, even one that passes raw HTML, the posts make
    # no image but the figure, no link, no HTML and no formatting
    kinds = [t.type for t in _tokens(md)]
    assert kinds.count("image") == 1 and "link_open" not in kinds
    closest = md.split("Synthetic posts closest to a real training post:")[1].split("## Cost")[0]
    assert not {"html_inline", "html_block", "code_inline", "em_open", "strong_open", "s_open"} & {t.type for t in _tokens(closest)}
    # and each post still shows, as written (line breaks as spaces)
    text = " ".join(html_lib.unescape(page).split())
    for post in posts:
        assert " ".join(post.split()) in text, post


def test_a_post_like_a_block_stays_in_its_cell(tmp_path):
    posts = ["# heading", ">quote", "- item", "+ item", "2) item", "    indented code", "- - -", "1.", "a | b", "`x`"]
    md, page = _crafted_report(tmp_path, posts)
    closest = md.split("Synthetic posts closest to a real training post:")[1].split("## Cost")[0]
    kinds = {t.type for t in _tokens(closest)}
    assert not {"heading_open", "blockquote_open", "bullet_list_open", "ordered_list_open", "code_block", "code_inline", "hr"} & kinds
    rows = [line for line in closest.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(posts) // 2  # header, rule, one row per pair: no cell split, no row broken
    from markdown_it import MarkdownIt

    inline = MarkdownIt("commonmark", {"html": True}).renderInline
    cells = [html_lib.unescape(inline(t.content)) for t in _tokens(closest) if t.type == "inline"]
    for post in posts:
        assert post in cells, post


def test_literal_escapes_only_what_could_be_markup():
    from smm4h_cli.study.report import literal

    # ordinary text stays readable: versions, model ids, dashes and numbers are not escaped
    plain = ["3.11.7", "gpt-4-0125-preview", "-1.000", "#hashtag", "well-known", "10 posts."]
    assert [literal(text) for text in plain] == plain
    assert literal("a\nb\u2028c") == "a b c"


def test_model_and_file_names_are_text_too(tmp_path):
    secret = _planted_secret(tmp_path)
    model = f"evil\n\n[s]: {secret}\n\n![s][s] <img src=\"{secret.as_uri()}\">"
    md, page = _crafted_report(tmp_path, ["a fine post"], model=model)
    assert _leaks(page) == []
    _assert_only_the_figure(page)
    kinds = [t.type for t in _tokens(md)]
    assert "link_open" not in kinds and kinds.count("image") == 1 and "html_inline" not in kinds


def test_the_html_embeds_only_the_listed_figures(tmp_path):
    # whatever the Markdown holds (here written raw, as a toolkit bug would), the renderer follows
    # no image or link: it embeds the figures it is given by name and nothing else
    from smm4h_cli.study.report import render_html

    secret = _planted_secret(tmp_path)
    figure = tmp_path / "figure2" / "tsne.png"
    figure.parent.mkdir()
    figure.write_bytes(b"\x89PNG fake figure bytes")
    markdown = "\n\n".join([
        "![fig](figure2/tsne.png)",
        f"![a]({secret})", "![b](secret.txt)", f"![c]({secret.as_uri()})", "![d](figure2/../secret.txt)",
        f"![e][r]\n\n[r]: {secret}", f"<img src=\"{secret.as_uri()}\">", "<script>x()</script>",
        f"[l]({secret.as_uri()}) [j](javascript:alert(1)) <https://example.com/x.png>",
    ])
    page = render_html(markdown, {"figure2/tsne.png": figure}, title="t")
    assert _leaks(page) == []
    _assert_only_the_figure(page)


def test_input_paths_show_as_given_or_relative_never_absolute(tmp_path, monkeypatch):
    from smm4h_cli.study.report import shown_path
    from smm4h_cli.sample import sample_path

    monkeypatch.chdir(tmp_path)
    assert shown_path(sample_path(5, "train")) == "sample_data/task5/train.jsonl"
    assert shown_path(tmp_path / "data" / "train.jsonl") == "data/train.jsonl"
    assert shown_path(Path("data/../data/train.jsonl")) == "data/train.jsonl"
    assert shown_path(Path.home() / "smm4h-data" / "train.jsonl") == "~/smm4h-data/train.jsonl"
    md, _ = _crafted_report(tmp_path, ["a fine post"])
    assert str(tmp_path) not in md
    assert "| train | data/train.jsonl |" in md and "| synthetic (paper) | synthetic/paper.jsonl |" in md


# ------------------------------------------------------------------ options checked before any work


def test_threads_option(cli):
    from smm4h_cli.errors import InputError

    result = cli("study", "--help")
    assert result.exit_code == 0 and "--threads" in result.stdout
    with pytest.raises(InputError, match="--threads must be at least 1"):
        StudyOptions(threads=0)


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_file_as_the_study_folder_is_refused_before_any_work(cli, tmp_path):
    in_the_way = tmp_path / "study"
    in_the_way.write_text("not a folder\n")
    result = cli("study", "--out", in_the_way, "--quiet")
    assert result.exit_code == 2 and "is a file; give a folder" in result.stderr
    assert "Traceback" not in result.stderr and in_the_way.read_text() == "not a folder\n"


def test_a_study_folder_that_cannot_be_made_is_refused_before_any_work(cli, tmp_path):
    # a file where one of the study folder's parents should be: found before reading, training
    # or generating anything, and nothing is written
    (tmp_path / "file").write_text("x\n")
    before = _tree(tmp_path)
    result = cli("study", "--out", tmp_path / "file" / "study", "--quiet")
    assert result.exit_code == 2 and "cannot be written" in result.stderr and "Traceback" not in result.stderr
    assert _tree(tmp_path) == before


def _table2(diff: float, low: float, high: float, p: float = 0.002) -> dict:
    from smm4h_cli.tables import p_clause

    verdict = f"significant difference ({p_clause(p)}): F1 {'higher' if diff > 0 else 'lower'} by {abs(diff):.3f}"
    return {
        "confidence": 0.95,
        "arms": [{"arm": "baseline", "f1": 0.767}, {"arm": "synthetic-paper", "f1": 0.767 + diff}],
        "pairs": [{"a": "baseline", "b": "synthetic-paper", "f1_diff": diff, "ci_low": low, "ci_high": high,
                   "mcnemar_p": p, "significant": True, "verdict": verdict}],
    }


def test_the_conclusion_states_a_significant_difference_once_and_says_which_way():
    """Failed before: 'a significant difference (significant difference (p = 0.002): F1 lower by 0.151)'."""
    from smm4h_cli.study.report import conclusion

    generation = [{"strategy": "paper", "posts kept": 943, "model": "embedded:SmolLM2-135M-Instruct"}]
    metrics = {"groups": [], "settings": {}}
    drop = conclusion(_table2(-0.151, -0.270, -0.036), [], metrics, generation)
    assert drop.count("significant difference") == 1 and drop.count("0.002") == 1
    assert "F1 lower by 0.151" in drop and "hurt" in drop and "helped" not in drop
    gain = conclusion(_table2(0.05, 0.01, 0.09), [], metrics, generation)
    assert "F1 higher by 0.050" in gain and "helped" in gain and "hurt" not in gain
    # McNemar significant, but the F1 interval includes 0: neither helped nor hurt is claimed
    mixed = conclusion(_table2(-0.02, -0.06, 0.01), [], metrics, generation)
    assert "hurt" not in mixed and "helped" not in mixed and "includes 0" in mixed
    # the demo's case, failed before: 'McNemar p = < 0.001'
    tiny = conclusion(_table2(-0.253, -0.398, -0.115, p=0.0004), [], metrics, generation)
    assert "McNemar p < 0.001)" in tiny and "p = <" not in tiny


def test_the_generation_fingerprint_changes_only_where_the_generator_changed():
    """Studies made before --output-format keep their fingerprints unless their generator's defaults changed."""
    from types import SimpleNamespace

    from smm4h_cli.generation.structured import POST_PATTERN
    from smm4h_cli.study.pipeline import _generation_key

    def key(kind: str, model: str, **options) -> dict:
        study = SimpleNamespace(options=StudyOptions(**options), digests={"train": "t", "columns": "c"})
        return _generation_key(study, "paper", kind, model)

    before = {"train": "t", "columns": "c", "task": 5, "n": 1000, "strategy": "paper", "base_url": None, "examples": 5, "seed": 0}
    # the paper's model and any served model under auto: exactly the keys of a study made before
    assert key("openai", "gpt-4-0125-preview") == {**before, "model": "gpt-4-0125-preview", "backend": "openai", "temperature": 0.0}
    assert key("compatible", "llama") == {**before, "model": "llama", "backend": "compatible", "temperature": 0.0}
    # an explicit format counts
    assert key("compatible", "llama", output_format="list")["output_format"] == "list"
    # the embedded model's defaults changed (JSON at 0.7), so its fingerprint does; --fill counts too
    embedded = key("embedded", "embedded:SmolLM2-135M-Instruct", fill=True)
    assert (embedded["output_format"], embedded["temperature"], embedded["fill"]) == ("json", 0.7, True)
    # its JSON is a grammar of the post's shape, which changed once already (three words)
    assert embedded["post_pattern"] == POST_PATTERN
    as_list = key("embedded", "embedded:SmolLM2-135M-Instruct", output_format="list", temperature=0.0)
    assert as_list["output_format"] == "list" and "post_pattern" not in as_list
