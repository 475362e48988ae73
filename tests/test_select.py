"""smm4h select: each rule on planted data, the fixed order, provenance, bad input, determinism.

Dedup (TF-IDF) and every bad-input check load no model and run in the fast lane; tests that
embed with the real MiniLM or train the real classifier are marked slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from smm4h_cli.analysis.diversity import vendi_score
from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records
from smm4h_cli.models import minilm_path
from smm4h_cli.selection import SelectOptions, select
from smm4h_cli.selection.rules import k_center_greedy, random_subset

from conftest import SAMPLE, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAIN = [
    {"id": "t1", "text": "my son was diagnosed with autism today and we are still processing it", "label": 1},
    {"id": "t2", "text": "our daughter has asthma and the cough came back again tonight", "label": 1},
    {"id": "t3", "text": "autism awareness month starts today, wear blue", "label": 0},
    {"id": "t4", "text": "the weather is lovely today, off to the park", "label": 0},
]
UNIQUE = [
    "my little boy just got his ADHD diagnosis, feeling relieved and scared",
    "the paediatrician says our toddler has a speech delay, starting therapy next week",
    "third night in a row my kid's eczema keeps her awake scratching",
    "our twins were both diagnosed with asthma at their check up",
    "my daughter's food allergy means we read every single label now",
    "the school finally agreed my son needs support for his dyslexia",
]


def _synthetic(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Six distinct posts and five planted ones, with the reason each planted one must go."""
    rows = [{"id": f"u{i}", "text": t, "source": "synthetic"} for i, t in enumerate(UNIQUE)]
    planted = {
        "p_exact": (UNIQUE[1], "exact"),
        "p_near": (UNIQUE[2].replace("third", "Third") + "!!", "exact"),  # normalises to the same text
        "p_near2": (UNIQUE[3].replace("twins", "two twins"), "near"),  # TF-IDF cosine 0.95
        "p_train": (TRAIN[0]["text"].upper(), "train_exact"),
        "p_train_near": (TRAIN[1]["text"] + " again", "train_near"),
    }
    plant = [{"id": k, "text": t, "source": "synthetic"} for k, (t, _) in planted.items()]
    rows = rows[:2] + plant[:1] + rows[2:3] + plant[1:2] + rows[3:] + plant[2:]  # each after the post it repeats
    return write_jsonl(tmp_path / "syn.jsonl", rows), {k: reason for k, (_, reason) in planted.items()}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    syn, reasons = _synthetic(tmp_path)
    return {"syn": syn, "train": write_jsonl(tmp_path / "train.jsonl", TRAIN), "reasons": reasons}


# ------------------------------------------------------------------------------ dedup (no model)


def test_dedup_drops_planted_duplicates_and_copies_and_nothing_else(files, tmp_path, cli):
    out, dropped = tmp_path / "kept.jsonl", tmp_path / "dropped.jsonl"
    result = cli("select", files["syn"], "--train", files["train"], "--dedup", "-o", out, "--dropped", dropped)
    assert result.exit_code == 0, result.stderr
    kept = read_records(out)
    assert kept["id"].to_list() == [f"u{i}" for i in range(len(UNIQUE))]  # every distinct post, in input order
    gone = read_records(dropped)
    assert dict(zip(gone["id"], gone["reason"])) == files["reasons"]
    assert set(gone["dropped_by"]) == {"dedup"}
    assert json.loads(gone.filter(pl.col("id") == "p_exact")["selection"][0])["of"] == "u1"
    assert json.loads(gone.filter(pl.col("id") == "p_train")["selection"][0])["of"] == "t1"
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["rules"] == ["dedup"] and meta["posts_in"] == 11 and meta["posts_kept"] == 6
    assert meta["dropped"] == {"dedup": {"exact": 2, "near": 1, "train_exact": 1, "train_near": 1}}
    assert json.loads(kept["selection"][0]) == {"rules": ["dedup"]}
    assert "dedup: dropped 5" in result.stderr


def test_dedup_keeps_the_first_of_a_group(tmp_path, files):
    frame = pl.DataFrame({"id": ["b", "a", "c"], "text": ["same post here", "same post here", "other post entirely"]})
    result = select(frame, read_records(files["train"]), SelectOptions(dedup=True, cache_dir=None))
    assert result.kept["id"].to_list() == ["b", "c"] and result.dropped["id"].to_list() == ["a"]


@pytest.mark.parametrize("ext", ["jsonl", "parquet", "csv"])
def test_selection_column_survives_every_format(files, tmp_path, cli, ext):
    out = tmp_path / f"kept.{ext}"
    assert cli("select", files["syn"], "--train", files["train"], "--dedup", "-o", out, "-q").exit_code == 0
    kept = read_records(out)
    assert kept.columns == ["id", "text", "source", "selection"]
    assert all(json.loads(s) == {"rules": ["dedup"]} for s in kept["selection"])


def test_a_second_selection_replaces_the_first_column(files, tmp_path, cli):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cli("select", files["syn"], "--train", files["train"], "--dedup", "-o", first, "-q")
    assert cli("select", first, "--train", files["train"], "--dedup", "-o", second, "-q").exit_code == 0
    assert read_records(second).equals(read_records(first))


def test_stdout_output_is_jsonl_and_no_meta(files, tmp_path, cli):
    result = cli("select", files["syn"], "--train", files["train"], "--dedup", "-q")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 6
    assert not list(tmp_path.glob("*.meta.json"))


# ------------------------------------------------------------------------------ pure rules


def test_k_center_greedy_takes_one_post_per_cluster_first():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16, dtype=np.float32)
    sizes = [20, 3, 3, 3]
    x = np.concatenate([c + 0.05 * rng.standard_normal((n, 16)).astype(np.float32) for c, n in zip(centres, sizes)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cluster = np.repeat(np.arange(4), sizes)
    picks = k_center_greedy(x, 4)
    assert sorted(cluster[picks].tolist()) == [0, 1, 2, 3]
    assert picks.tolist() == k_center_greedy(x, 4).tolist()  # no randomness
    assert len(set(k_center_greedy(x, len(x)).tolist())) == len(x)
    assert vendi_score(x[picks]) > vendi_score(x[random_subset(len(x), 4, 0)])


def test_random_subset_is_seeded_and_sorted():
    a, b, c = random_subset(50, 10, 1), random_subset(50, 10, 1), random_subset(50, 10, 2)
    assert a.tolist() == b.tolist() == sorted(a.tolist()) and a.tolist() != c.tolist()
    assert random_subset(5, 10, 0).tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------ bad input


def _bad_cases(files, tmp_path):
    unlabelled = write_jsonl(tmp_path / "unlabelled.jsonl", [{"id": r["id"], "text": r["text"]} for r in TRAIN])
    negatives = write_jsonl(tmp_path / "neg.jsonl", [dict(r, label=0) for r in TRAIN])
    syn, train, out = files["syn"], files["train"], tmp_path / "kept.jsonl"
    return [
        (["select", syn, "--train", train, "-o", out], "no selection rule given"),
        (["select", syn, "--train", train, "--diverse", "3", "--random", "3", "-o", out], "--diverse and --random both"),
        (["select", syn, "--train", train, "--diverse", "12", "-o", out], "asks for more posts than the 11"),
        (["select", syn, "--train", train, "--random", "0", "-o", out], "at least 1"),
        (["select", syn, "--train", unlabelled, "--dedup", "-o", out], "has no label column"),
        (["select", syn, "--train", negatives, "--dedup", "-o", out], "no positive posts (label 1)"),
        (["select", syn, "--train", train, "--dedup", "-o", syn, "--force"], "is also an input file"),
        (["select", syn, "--train", train, "--dedup", "-o", train, "--force"], "is also an input file"),
        (["select", syn, "--train", train, "--dedup", "-o", out, "--dropped", out], "same as --out"),
        (["select", syn, "--train", train, "--confidence", minilm_path(), "-o", out], "is not a classifier"),
        (["select", syn, "--train", train, "--confidence", tmp_path / "nothing", "-o", out], "no such run folder"),
        (["select", syn, "--train", train, "--dedup", "--max-prob", "0.9", "-o", out], "--max-prob needs --confidence"),
        (["select", syn, "--train", train, "--dedup", "--min-prob", "0.9", "-o", out], "--min-prob needs --confidence"),
        (["select", syn, "--train", train, "--dedup", "--near", "1.5", "-o", out], "--near must be"),
        (["select", syn, "--train", train, "--dedup", "-o", tmp_path / "kept.txt"], "unknown file format"),
        # Fault: -o synthetic.parquet wrote its summary over synthetic.meta.json, generate's record of the input
        (["select", syn, "--train", train, "--dedup", "-o", syn.with_suffix(".parquet"), "--force"], f"which is the summary of the input {syn}"),
    ]


def test_bad_input_exits_2_and_writes_nothing(files, tmp_path, cli):
    for args, message in _bad_cases(files, tmp_path):
        before = sorted(p.name for p in tmp_path.iterdir())
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (message, result.stderr)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, args


def test_existing_output_needs_force(files, tmp_path, cli):
    out = tmp_path / "kept.jsonl"
    out.write_text("old\n")
    result = cli("select", files["syn"], "--train", files["train"], "--dedup", "-o", out)
    assert result.exit_code == 2 and "--force" in result.stderr and out.read_text() == "old\n"
    assert cli("select", files["syn"], "--train", files["train"], "--dedup", "-o", out, "--force", "-q").exit_code == 0


def test_options_validate_in_the_library():
    with pytest.raises(InputError, match="--max-prob must be above"):
        SelectOptions(min_prob=0.6, max_prob=0.5, cache_dir=None)
    with pytest.raises(ValueError):  # InputError is a ValueError for library callers
        SelectOptions(diverse=2, random=2, cache_dir=None)


# ------------------------------------------------------------------------------ diverse, random (MiniLM)

# One topic said twenty ways, and five other topics once each: a random 6 mostly repeats the
# first topic, a diverse 6 should reach the others.
CROWD = [f"my son has asthma and his inhaler is running low, day {i} of this cold" for i in range(20)]
OTHERS = UNIQUE[:2] + UNIQUE[4:] + ["our baby girl was born with a heart murmur, the cardiologist visit is monday"]


@pytest.fixture
def crowd(tmp_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    texts = CROWD[:10] + OTHERS[:2] + CROWD[10:] + OTHERS[2:]
    synthetic = pl.DataFrame({"id": [f"s{i}" for i in range(len(texts))], "text": texts})
    return synthetic, read_records(write_jsonl(tmp_path / "train.jsonl", TRAIN))


@pytest.mark.slow
def test_diverse_beats_random_on_vendi_at_equal_n(crowd, tmp_path):
    synthetic, train = crowd
    options = dict(cache_dir=tmp_path / "cache", device="cpu")
    diverse = select(synthetic, train, SelectOptions(diverse=6, **options))
    assert diverse.kept.height == 6 and diverse.dropped_counts == {"diverse": {"not_chosen": len(synthetic) - 6}}
    assert sum(t in OTHERS for t in diverse.kept["text"]) >= 4
    for seed in range(5):
        random = select(synthetic, train, SelectOptions(random=6, seed=seed, **options))
        assert random.kept.height == 6
        assert diverse.measures["vendi_kept"] > random.measures["vendi_kept"], seed
    assert diverse.measures["vendi_kept"] > diverse.measures["vendi_before"]
    picks = sorted(json.loads(s)["pick"] for s in diverse.kept["selection"])
    assert picks == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_same_seed_same_output(files, tmp_path, cli):
    outs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.jsonl"
        result = cli("select", files["syn"], "--train", files["train"], "--dedup", "--random", "3", "--seed", seed, "-o", out, "--dropped", tmp_path / f"{name}-dropped.jsonl", "--device", "cpu", "-q")
        assert result.exit_code == 0, result.stderr
        outs.append(out.read_bytes() + (tmp_path / f"{name}-dropped.jsonl").read_bytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]


@pytest.mark.slow
def test_subset_larger_than_what_is_left_keeps_all_and_says_so(files, tmp_path, cli):
    out = tmp_path / "kept.jsonl"
    result = cli("select", files["syn"], "--train", files["train"], "--dedup", "--diverse", "10", "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert read_records(out).height == 6
    assert "--diverse 10 asked for more posts than the 6" in result.stderr
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["short"] == {"rule": "diverse", "asked": 10, "available": 6}
    assert meta["dropped"]["diverse"] == {"not_chosen": 0}


# ------------------------------------------------------------------------------ confidence (trained classifier)


def _split(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / "task5" / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """A small classifier trained on real Task 5 posts, as smm4h train writes it."""
    from smm4h_cli.training.train import TrainOptions, train_seeds

    frame = pl.DataFrame(_split("train")).select("id", "text", "label")
    validation = pl.DataFrame(_split("validation")).select("id", "text", "label")
    out = tmp_path_factory.mktemp("runs") / "real"
    options = TrainOptions(out=out, epochs=3, lr=1e-4, batch_size=16, max_length=48, device="cpu", threads=2, balance="class-weight", force=True)
    train_seeds(options, (0,), frame, validation, None)
    return out


@pytest.mark.slow
def test_confidence_drops_disguised_negatives_far_more_than_positives(real_run, tmp_path, cli):
    test = _split("test")
    # Real test posts, unseen in training, dressed as synthetic positives: the negatives are the plants.
    rows = [{"id": r["id"], "text": r["text"], "source": "synthetic", "planted": r["label"] == 0} for r in test]
    syn = write_jsonl(tmp_path / "syn.jsonl", rows)
    train = SAMPLE / "task5" / "train.jsonl"
    out, dropped = tmp_path / "kept.jsonl", tmp_path / "dropped.jsonl"
    result = cli("select", syn, "--train", train, "--confidence", real_run, "-o", out, "--dropped", dropped, "--device", "cpu", "--threads", "2")
    assert result.exit_code == 0, result.stderr
    gone = read_records(dropped)
    negatives = sum(r["planted"] for r in rows)
    positives = len(rows) - negatives
    neg_rate = gone.filter(pl.col("planted"))["id"].len() / negatives
    pos_rate = gone.filter(~pl.col("planted"))["id"].len() / positives
    assert neg_rate >= 0.6 and neg_rate >= pos_rate + 0.3, (neg_rate, pos_rate)
    assert set(gone["reason"]) <= {"below_min_prob"}
    kept = read_records(out)
    probs = [json.loads(s)["prob"] for s in kept["selection"]]
    assert min(probs) >= 0.5 and all(json.loads(s)["rules"] == ["confidence"] for s in kept["selection"])
    assert all(json.loads(s)["prob"] < 0.5 for s in gone["selection"])
    # The order is fixed: --max-prob also drops the surest ones, and the counts add up.
    capped = select(read_records(syn), read_records(train), SelectOptions(min_prob=0.5, max_prob=0.9, cache_dir=None, device="cpu"), run_dir=real_run)
    counts = capped.dropped_counts["confidence"]
    assert counts["below_min_prob"] == gone.height and capped.posts_kept + sum(counts.values()) == len(rows)
    assert all(0.5 <= json.loads(s)["prob"] <= 0.9 for s in capped.kept["selection"])


def test_help_names_every_rule_and_the_order(cli):
    result = cli("select", "--help")
    assert result.exit_code == 0
    for option in ("--dedup", "--near", "--confidence", "--min-prob", "--max-prob", "--diverse", "--random", "--dropped", "--seed", "--device", "--threads"):
        assert option in result.stdout, option
    assert "dedup -> confidence -> diverse | random" in " ".join(result.stdout.split())
    assert "select" in cli("--help").stdout
