"""The pure diversity measures of `embed-cluster`, on hand-checkable vectors (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from smm4h_cli.analysis.diversity import (
    copying,
    centroid_distance,
    cluster_entropy,
    coverage,
    group_rows,
    nearest_real,
    pairwise_distance,
    prdc,
    realism_scores,
    summary_line,
    vendi_score,
    vendi_scores,
)
from smm4h_cli.analysis.groups import Group

E6 = np.eye(6, dtype=np.float32)
E4 = np.eye(4)


@pytest.mark.parametrize(
    "vectors, expected",
    [
        (np.repeat(E6[:1], 7, axis=0), 1.0),  # n identical posts
        (E6, 6.0),  # n orthogonal posts
        (np.repeat(E6[:2], 5, axis=0), 2.0),  # two distinct posts, 5 copies each
    ],
    ids=["identical", "orthogonal", "two-distinct"],
)
def test_vendi_hand_checkable_cases(vectors, expected):
    assert vendi_score(vectors) == pytest.approx(expected)


def test_vendi_d_by_d_route_equals_n_by_n():
    # more posts than dimensions takes the d x d route: same answer as the n x n one
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    eig = np.linalg.eigvalsh(x @ x.T / 50)
    eig = eig[eig > 1e-12]
    assert vendi_score(x) == pytest.approx(float(np.exp(-np.sum(eig * np.log(eig)))))


@pytest.mark.parametrize(
    "measure, vectors, expected",
    [
        (centroid_distance, np.repeat(E4[:1], 3, axis=0), 0.0),
        (pairwise_distance, np.repeat(E4[:1], 3, axis=0), 0.0),
        (pairwise_distance, E4, 1.0),
        (centroid_distance, E4, 0.5),  # cos to the centre is 1/2 for 4 axes
    ],
    ids=["centroid-identical", "pairwise-identical", "pairwise-orthogonal", "centroid-orthogonal"],
)
def test_dispersion(measure, vectors, expected):
    assert measure(vectors) == pytest.approx(expected)


def test_cluster_entropy():
    assert cluster_entropy(np.array([0, 0, 0])) == 0.0
    assert cluster_entropy(np.array([0, 1, 2, 3])) == pytest.approx(2.0)


def test_coverage():
    assert coverage(np.array([0, 0, 5]), np.array([0, 1, 2, 3])) == (1, 4)


def test_nearest_real_across_chunks():
    sims, where = nearest_real(E4[:2].astype(np.float32), np.stack([E4[1], E4[0], E4[2]]).astype(np.float32), chunk=2)
    assert sims.tolist() == [1.0, 1.0] and where.tolist() == [1, 0]


# ------------------------------------------------------------------------------ realism: precision, recall, density, coverage
# Hand-computed on points of the plane (Euclidean), where every k-NN radius can be read off.
# A real bulk at x = 0, 1, 2 and one real outlier at x = 10. With k = 2 the real radii are
# 2, 1, 2 (the bulk) and 9 (the outlier: its 2nd nearest is (1, 0)).
REAL = np.array([[0, 0], [1, 0], [2, 0], [10, 0]], dtype=float)


def test_prdc_fakes_in_the_dense_bulk_density_above_one():
    # Fakes a = (1, .5), b = (1, -.5), c = (.5, 0). Each lies in the balls of (0, 0) [1.118 and
    # 0.5 <= 2], (1, 0) [0.5 <= 1] and (2, 0) [1.118, 1.5 <= 2], not the outlier's [>= 9.01 > 9]:
    # 3 balls each, density 3 / k = 1.5.
    # Fake radii (k = 2): a, b: 1 (c at .707, the other at 1); c: .707.
    # recall: (0, 0) is in c's ball (.5 <= .707), (1, 0) in a's (.5 <= 1); (2, 0) is 1.118 from
    # a and b (> 1) and 1.5 from c; the outlier is far: 2 of 4.
    # coverage: nearest fake of (0, 0) .5 <= 2, of (1, 0) .5 <= 1, of (2, 0) 1.118 <= 2, of the
    # outlier 9.014 > 9: 3 of 4.
    fake = np.array([[1, 0.5], [1, -0.5], [0.5, 0]])
    assert prdc(REAL, fake, k=2, metric="euclidean") == pytest.approx({"precision": 1.0, "recall": 0.5, "density": 1.5, "coverage": 0.75})


def test_prdc_real_outlier_fools_precision_not_density():
    # Fakes (6, 0), (6, 1), (7, 0), far from the real bulk: each lies only in the real outlier's
    # large ball (radius 9; the bulk's balls of radius <= 2 end before x = 4). Precision calls
    # them all realistic; density, 1 ball over k = 2, says 0.5.
    # Fake radii (k = 2): (6, 0): 1; (6, 1) and (7, 0): 1.414. recall: no real post within
    # them (the outlier is 3 from (7, 0)): 0. coverage: only the outlier's ball holds a fake: 1/4.
    fake = np.array([[6, 0], [6, 1], [7, 0]])
    assert prdc(REAL, fake, k=2, metric="euclidean") == pytest.approx({"precision": 1.0, "recall": 0.0, "density": 0.5, "coverage": 0.25})


def test_prdc_fake_outlier_fools_recall_not_coverage():
    # Four reals evenly spaced, k = 1: every real radius is 1. Two fakes: one by (0, 0), one
    # stray at (10, .5). k = 1: each fake's radius is the distance to the other, 10, so the
    # stray's ball swallows every real post: recall 1. Coverage asks each real ball for a fake:
    # (0, 0) has one at .5; (1, 0)'s nearest is 1.118 away (> 1): 1 of 4.
    # precision: (0, .5) is in (0, 0)'s ball, the stray in none: 1/2; density: 1 ball, 0 balls: .5.
    real = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], dtype=float)
    fake = np.array([[0, 0.5], [10, 0.5]])
    assert prdc(real, fake, k=1, metric="euclidean") == pytest.approx({"precision": 0.5, "recall": 1.0, "density": 0.5, "coverage": 0.25})


def test_prdc_closed_balls_hold_identical_posts():
    # Three copies of one post on each side: every radius is 0 (up to rounding). Closed balls:
    # each fake lies in all 3 real balls (density 3 / k = 1.5) and every measure is 1. (With
    # open balls, as the prdc package, identical copies would count as unrealistic.)
    post = np.array([[0.6, 0.8, 0.0]], dtype=np.float32)
    copies = np.repeat(post, 3, axis=0)
    assert prdc(copies, copies, k=2) == pytest.approx({"precision": 1.0, "recall": 1.0, "density": 1.5, "coverage": 1.0})


def _reference_prdc(real, fake, k):
    """The definitions, literally, on full distance matrices (fine for small sets)."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=2)  # real x fake
    r_real = np.sort(d_rr, axis=1)[:, k]
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf <= r_real[:, None]
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (d_rf <= r_fake[None, :]).any(axis=1).mean(),
        "density": inside.sum(axis=0).mean() / k,
        "coverage": (d_rf.min(axis=1) <= r_real).mean(),
    }


def _unit(rng, n, d=8, shift=0.0):
    x = rng.normal(size=(n, d)) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_prdc_matches_the_definitions_and_cosine_equals_euclidean_on_unit_vectors():
    rng = np.random.default_rng(0)
    real, fake = _unit(rng, 40), _unit(rng, 30, shift=0.5)
    expected = _reference_prdc(real, fake, 5)
    assert prdc(real, fake, k=5, metric="euclidean") == pytest.approx(expected)
    # for unit vectors the Euclidean distance is sqrt(2 x cosine distance): the same balls
    assert prdc(real, fake, k=5) == pytest.approx(expected)
    # the same distribution: density about 1, precision and coverage high
    same = prdc(real, _unit(np.random.default_rng(1), 40), k=5)
    assert 0.7 < same["density"] < 1.3 and same["precision"] > 0.8


def test_prdc_needs_more_points_than_k():
    with pytest.raises(ValueError, match="more than k points"):
        prdc(REAL, REAL[:2], k=2)


def _groups_and_vectors():
    """32 real positives, 8 along each of e0..e3; 32 synthetic posts huddled by e0; 32 negatives.

    8 per direction, so that a real post's 5 nearest neighbours lie in its own direction."""
    rng = np.random.default_rng(3)
    e = np.eye(8)
    noisy = lambda base, n: [v / np.linalg.norm(v) for v in (base + 0.05 * rng.normal(size=(n, 8)))]
    pos = np.stack([v for d in range(4) for v in noisy(e[d], 8)])
    syn = np.stack(noisy(e[0], 32))
    neg = np.stack(noisy(e[5], 32))
    groups = [Group("train/label 1", ["p"] * 32), Group("train/label 0", ["n"] * 32), Group("gen", ["s"] * 32)]
    roles = {"train/label 1": "real positives", "train/label 0": "real negatives", "gen": "synthetic"}
    return groups, roles, {"train/label 1": pos, "train/label 0": neg, "gen": syn}


def test_realism_of_a_narrow_synthetic_group():
    groups, roles, sampled = _groups_and_vectors()
    realism, k = realism_scores(groups, sampled, roles, n=32, seed=0)
    assert k == 5 and realism["train/label 1"] is None and realism["train/label 0"] is None
    gen = realism["gen"]
    # realistic but narrow: (nearly) every synthetic post sits among real positives; only the quarter of
    # them along e0 is covered
    assert gen["precision"] >= 0.9 and gen["coverage"] == pytest.approx(0.25) and gen["recall"] <= 0.25
    rows = group_rows(groups, roles, sampled, {name: np.zeros(32, int) for name in sampled}, *_vendi_and_copies(groups, sampled, roles), realism)
    by = {r["group"]: r for r in rows}
    assert by["gen"]["knn_coverage"] == pytest.approx(0.25) and by["gen"]["precision"] == gen["precision"]
    assert all(by[name][key] is None for name in ("train/label 1", "train/label 0") for key in ("precision", "recall", "density", "knn_coverage"))
    line = summary_line(by["gen"], 4.0, 32, 2, 0.9, realism_k=k)
    assert line.endswith(
        f"; against real positives (5-NN): precision {gen['precision']:.2f}, recall {gen['recall']:.2f}, density {gen['density']:.2f}, coverage 0.25"
    )
    assert "against real positives" not in summary_line(by["train/label 1"], 4.0, 32, 2, 0.9, realism_k=k)


def _vendi_and_copies(groups, sampled, roles):
    vendi, _ = vendi_scores(groups, sampled, roles, 32, 0)
    return vendi, {g.name: None for g in groups}


def test_realism_size_matched_and_k_lowered_for_tiny_samples():
    groups, roles, sampled = _groups_and_vectors()
    # 3 posts per group: k is lowered to n - 1 = 2, and both sides are drawn to 3 posts
    realism, k = realism_scores(groups, sampled, roles, n=3, seed=0)
    assert k == 2 and realism["gen"] is not None
    # no real positives: nothing to measure against
    realism, k = realism_scores(groups, sampled, {**roles, "train/label 1": "real"}, n=32, seed=0)
    assert k is None and all(v is None for v in realism.values())


@pytest.mark.parametrize("seed", range(4))
def test_prdc_in_one_chunked_pass_equals_the_whole_matrix(seed):
    """The fake x real distances read once, in chunks of a few rows, give what the whole
    matrices give: balls per fake post, real posts in a fake ball, nearest fake per real post."""
    from sklearn.metrics import pairwise_distances

    from smm4h_cli.analysis import diversity

    rng = np.random.default_rng(seed)
    real = rng.normal(size=(40, 5))
    fake = np.vstack([rng.normal(size=(25, 5)) * 0.5, real[:3]])  # a few copies: boundary cases
    k = 3
    d_real, d_fake, d = (pairwise_distances(a, b, metric="cosine") for a, b in ((real, real), (fake, fake), (fake, real)))
    real_radii, fake_radii = np.sort(d_real, axis=1)[:, k], np.sort(d_fake, axis=1)[:, k]
    tol = diversity.BALL_TOLERANCE
    counts, in_fake_ball, nearest = diversity._fake_against_real(fake, real, real_radii, fake_radii, "cosine", working_memory=0.001)
    assert counts.tolist() == (d <= real_radii[None, :] + tol).sum(axis=1).tolist()
    assert in_fake_ball.tolist() == (d <= fake_radii[:, None] + tol).any(axis=0).tolist()
    assert np.allclose(nearest, d.min(axis=0))
    assert prdc(real, fake, k=k) == pytest.approx({
        "precision": np.mean(counts > 0), "recall": np.mean(in_fake_ball),
        "density": np.mean(counts) / k, "coverage": np.mean(d.min(axis=0) <= real_radii + tol),
    })


def test_copy_threshold_one_counts_every_verbatim_copy():
    """float32 dot products of identical unit vectors land within about 1e-6 of 1, below it for
    some: at threshold 1.0 the verbatim copies counted only where rounding went up (60% here)."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(40, 384)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)  # unit vectors in float32, as MiniLM gives them
    assert (nearest_real(real, real)[0] < 1.0).any()  # the rounding the tolerance is for
    other = rng.normal(size=(10, 384)).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    groups = [Group("real/label 1", [f"r{i}" for i in range(40)]), Group("gen", [f"r{i}" for i in range(40)] + [f"s{i}" for i in range(10)])]
    vectors = {"real/label 1": real, "gen": np.concatenate([real, other])}  # 40 exact copies, 10 new posts
    roles = {"real/label 1": "real positives", "gen": "synthetic"}
    share, pairs = copying(groups, vectors, roles, threshold=1.0, closest=3)
    assert share == {"real/label 1": None, "gen": pytest.approx(40 / 50)}
    assert [p["synthetic_text"] == p["real_text"] for p in pairs] == [True] * 3
    share, _ = copying(groups, vectors, roles, threshold=0.9, closest=0)
    assert share["gen"] == pytest.approx(40 / 50)  # the unrelated posts are far below any threshold
