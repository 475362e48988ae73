"""The pure diversity measures of `embed-cluster`, on hand-checkable vectors (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from smm4h_cli.analysis.diversity import centroid_distance, cluster_entropy, coverage, nearest_real, pairwise_distance, vendi_score

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
