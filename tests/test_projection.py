"""t-SNE backends (scikit-learn below the threshold, openTSNE from it) and the encoder's precision."""

from __future__ import annotations

import numpy as np
import pytest

from smm4h_cli.analysis.clustering import EmbedClusterOptions, embed_cluster, embed_groups
from smm4h_cli.analysis.embeddings import SentenceEmbedder, cache_file, cache_key, embed_texts, resolve_embed_precision
from smm4h_cli.analysis.groups import Group
from smm4h_cli.analysis.projection import FFT_FROM, FFT_INTS_IN_INTERVAL, tsne, tsne_backend
from smm4h_cli.errors import InputError
from smm4h_cli.models import EMBEDDED_MINILM


def blobs(n: int = 150, seed: int = 0) -> np.ndarray:
    """Three separated groups of unit vectors in 32 dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 32)) * 3
    x = centres[np.arange(n) % 3] + rng.normal(size=(n, 32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_backend_threshold_keeps_scikit_learn_for_paper_sized_samples():
    # the paper's figure: three groups of 1,000 posts; a study with several synthetic arms: a few more
    assert tsne_backend(3000) == tsne_backend(FFT_FROM - 1) == "sklearn"
    assert tsne_backend(FFT_FROM) == tsne_backend(100_000) == "opentsne"
    assert tsne_backend(150, fft_from=100) == "opentsne"


@pytest.mark.slow
def test_opentsne_path_runs_and_repeats_per_seed():
    x = blobs()
    a = tsne(x, 30.0, seed=1, fft_from=0, threads=1)
    assert a.shape == (150, 2) and np.isfinite(a).all() and a.std() > 0
    assert np.array_equal(a, tsne(x, 30.0, seed=1, fft_from=0, threads=1))
    assert not np.array_equal(a, tsne(x, 30.0, seed=2, fft_from=0, threads=1))
    # one thread or two: the same map
    assert np.array_equal(a, tsne(x, 30.0, seed=1, fft_from=0, threads=2))
    # the three groups stay apart: each point's nearest map neighbour is from its own group
    d = np.linalg.norm(a[:, None] - a[None], axis=2) + np.eye(len(a)) * 1e9
    assert np.mean(np.argmin(d, axis=1) % 3 == np.arange(len(a)) % 3) > 0.95


@pytest.mark.slow
def test_opentsne_map_does_not_follow_the_thread_count():
    """From 1,000 points openTSNE finds neighbours with Annoy, whose threaded build seeds each
    thread apart: built with n_jobs=2 its trees, affinities and map differed from n_jobs=1. The
    trees are built on one thread, so 1, 2 and every core give openTSNE's own n_jobs=1 map."""
    from openTSNE import TSNE

    x = np.random.default_rng(0).normal(size=(1200, 16)).astype(np.float32)  # above Annoy's 1,000
    one = tsne(x, 30.0, seed=0, fft_from=0, threads=1)
    assert np.array_equal(one, tsne(x, 30.0, seed=0, fft_from=0, threads=2))
    assert np.array_equal(one, tsne(x, 30.0, seed=0, fft_from=0, threads=None))
    plain = TSNE(
        n_components=2, perplexity=30.0, initialization="pca", learning_rate="auto", negative_gradient_method="fft",
        ints_in_interval=FFT_INTS_IN_INTERVAL, n_jobs=1, random_state=0, verbose=False,
    ).fit(x.astype(np.float64))
    assert np.array_equal(one, np.asarray(plain))  # the map openTSNE itself draws on one thread


@pytest.mark.slow
def test_embed_cluster_on_opentsne_when_the_threshold_is_lowered():
    x = blobs(120)
    texts = [f"post {i}" for i in range(120)]
    lookup = dict(zip(texts, x))

    def embedder(batch, progress=None):
        return np.stack([lookup[t] for t in batch])

    groups = [Group("a", texts[:60]), Group("b", texts[60:])]
    runs = [embed_cluster(groups, EmbedClusterOptions(k=3, sample=0, seed=4, fft_from=100), embedder=embedder) for _ in range(2)]
    assert runs[0].metrics["settings"]["tsne"] == "opentsne"
    assert runs[0].metrics["settings"]["tsne_grid"] == FFT_INTS_IN_INTERVAL  # which map it is, for 10k+ posts
    assert runs[0].points.columns == ["id", "group", "text", "x", "y", "cluster"]
    assert runs[0].points.equals(runs[1].points)
    default = embed_cluster(groups, EmbedClusterOptions(k=3, sample=0, seed=4), embedder=embedder)
    assert default.metrics["settings"]["tsne"] == "sklearn"
    assert default.metrics["settings"]["tsne_grid"] is None


@pytest.mark.parametrize("bad", [{"fft_from": -1}, {"precision": "fp16"}, {"precision": "half"}])
def test_bad_projection_and_precision_options(bad):
    with pytest.raises(InputError):
        EmbedClusterOptions(**bad)


def test_auto_precision_follows_the_training_test():
    from smm4h_cli.training.hf import resolve_precision

    assert resolve_embed_precision("auto", "cpu") == resolve_precision("auto", "cpu")
    assert resolve_embed_precision("fp32", "cpu") == "fp32" and resolve_embed_precision("bf16", "cpu") == "bf16"


def test_cache_key_separates_precisions(tmp_path):
    assert cache_key(None, "fp32") != cache_key(None, "bf16")
    assert cache_file(tmp_path, cache_key("m", "fp32")) != cache_file(tmp_path, cache_key("m", "bf16"))
    assert cache_key("m", "fp32") == "m"  # caches written before bf16 existed stay valid
    # bf16 vectors differ between CPU and CUDA: a key per device type (cuda:1 is cuda's)
    assert cache_key(None, "bf16", "cpu") != cache_key(None, "bf16", "cuda") == cache_key(None, "bf16", "cuda:1")
    assert cache_key(None, "fp32", "cuda") == cache_key(None, "fp32", "cpu") == EMBEDDED_MINILM  # unchanged


def test_a_local_model_folder_is_keyed_by_path_and_files(tmp_path, monkeypatch):
    """The key was the path as typed: ./model from two places, or one folder retrained in
    place, shared one cache and served the old vectors."""
    import os

    for place in ("a", "b"):
        (tmp_path / place / "model").mkdir(parents=True)
        (tmp_path / place / "model" / "config.json").write_text('{"dim": 4}')
    monkeypatch.chdir(tmp_path / "a")
    key_a = cache_key("./model", "fp32")
    assert key_a == cache_key(str(tmp_path / "a" / "model"), "fp32")  # relative or absolute: one folder, one key
    assert str(tmp_path / "a" / "model") in key_a
    monkeypatch.chdir(tmp_path / "b")
    assert cache_key("./model", "fp32") != key_a  # the same string, another folder
    weights = tmp_path / "b" / "model" / "model.safetensors"
    weights.write_bytes(b"1234")
    before = cache_key("./model", "fp32")
    weights.write_bytes(b"5678")  # retrained in place: same name and size, a new modification time
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert cache_key("./model", "fp32") != before


def test_cached_vectors_of_another_dimension_are_encoded_again(tmp_path):
    """Vectors of a 4-dimensional model under the key of an 8-dimensional one crashed np.stack
    ("all input arrays must have the same shape") or were served as they were."""

    def model(dim):
        def embed(texts, progress=None):
            v = np.arange(1, len(texts) * dim + 1, dtype=np.float32).reshape(len(texts), dim)
            return v / np.linalg.norm(v, axis=1, keepdims=True)
        return embed

    embed_texts(["a", "b"], model(4), "k", tmp_path)
    vectors, encoded = embed_texts(["a", "z"], model(8), "k", tmp_path)  # "a" cached at 4, "z" new at 8
    assert vectors.shape == (2, 8) and encoded == 2

    class Sized:
        dimension = 16

        def __call__(self, texts, progress=None):
            return model(16)(texts)

    vectors, encoded = embed_texts(["a", "z"], Sized(), "k", tmp_path)  # every text cached, at 8
    assert vectors.shape == (2, 16) and encoded == 2
    again, encoded = embed_texts(["a", "z"], Sized(), "k", tmp_path)
    assert encoded == 0 and np.array_equal(again, vectors)  # the cache now holds the 16-d vectors


def test_a_run_sharing_no_text_with_the_cache_adds_to_it(tmp_path):
    """Regression: a run whose texts were none of them cached rewrote the cache with its own
    vectors alone, so two datasets sharing the default cache encoded each other's posts again."""

    def embed(texts, progress=None):
        v = np.array([[len(t), 1.0, 2.0] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    embed_texts(["a", "bb", "ccc"], embed, "k", tmp_path)
    _, encoded = embed_texts(["dddd", "eeeee"], embed, "k", tmp_path)
    assert encoded == 2
    _, encoded = embed_texts(["a", "bb", "ccc", "dddd"], embed, "k", tmp_path)
    assert encoded == 0


@pytest.mark.slow
def test_bf16_vectors_are_not_served_from_the_fp32_cache(tmp_path):
    texts = ["I had a terrible headache after the pill", "great day at the beach", "nausea and dizziness for weeks"]
    groups = [Group("a", texts)]
    fp32 = SentenceEmbedder(None, device="cpu", batch_size=4)
    bf16 = SentenceEmbedder(None, device="cpu", batch_size=4, precision="bf16")
    options = EmbedClusterOptions(cache_dir=tmp_path, device="cpu")
    full, encoded = embed_groups(groups, options, None, fp32)
    assert encoded == 3
    half, encoded = embed_groups(groups, options, None, bf16)
    assert encoded == 3  # its own cache entry, not the fp32 vectors
    cosine = np.sum(full["a"] * half["a"], axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(full["a"], half["a"])
    assert np.allclose(np.linalg.norm(half["a"], axis=1), 1.0, atol=1e-5)
    _, encoded = embed_groups(groups, options, None, bf16)
    assert encoded == 0
