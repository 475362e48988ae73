"""`smm4h study` end to end on tiny data, with the real embedded models and server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from smm4h_cli.study import StudyOptions, run_study

from conftest import ROOT, write_jsonl

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    return {
        "train": write_jsonl(d / "train.jsonl", _rows(POS[:8], 1, "p") + _rows(NEG[:16], 0, "n")),
        "validation": write_jsonl(d / "validation.jsonl", _rows(POS[8:10], 1, "vp") + _rows(NEG[16:20], 0, "vn")),
        "test": write_jsonl(d / "test.jsonl", _rows(POS[10:], 1, "tp") + _rows(NEG[20:], 0, "tn")),
    }


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


def test_html_is_self_contained(finished):
    _, result, _ = finished
    page = result.report_html.read_text()
    assert "<table>" in page and 'src="data:image/png;base64,' in page
    assert 'src="figure2/' not in page  # no image left pointing at a file beside the page


def test_unchanged_rerun_skips_everything(finished, data):
    out, first, _ = finished
    again = run_study(_options(data, out))
    assert again.ran == [] and set(again.skipped) == set(first.ran)


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


def test_a_new_seed_trains_alone_and_a_new_test_file_only_predicts(finished, data, tmp_path):
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

    # other settings: every seed is retrained
    result = run_study(_options({**data, "test": test2}, copy, seeds=(0,), epochs=2))
    assert stamp(seed0 / "model.safetensors") != weights0


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
    from smm4h_cli.study import _Steps

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
