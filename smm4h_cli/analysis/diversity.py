"""Diversity measures of a group of embedded posts: pure functions of arrays, no I/O, no models.

The vectors are L2-normalised rows (sentence embeddings), so dot products are cosine similarities.

* ``vendi_score`` (Friedman & Dieng, 2023): exp of the Shannon entropy of the eigenvalues of K/n,
  K the cosine-similarity matrix; the effective number of distinct posts.
* ``centroid_distance``, ``pairwise_distance``: dispersion as mean cosine distances.
* ``cluster_entropy``, ``coverage``: how a group spreads over k-means clusters, and how many of
  the clusters real positives occupy it reaches.
* ``nearest_real``: for each synthetic post, its nearest real post (copying).

Below them, the measures of each group of an analysis (``vendi_scores``, ``copying``,
``group_rows``) and its one-line verdict (``summary_line``), from vectors and roles.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from smm4h_cli.analysis.groups import ROLE_POSITIVES, ROLE_SYNTHETIC, Group, draw, post_ids


def vendi_score(vectors: np.ndarray) -> float:
    """exp(entropy of the eigenvalues of K/n), K = X Xᵀ the cosine-similarity matrix of X's rows.

    The rows must be L2-normalised. K/n and XᵀX/n share their non-zero eigenvalues, so the
    d × d matrix is used when it is the smaller one.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return 0.0
    gram = (x.T @ x) if x.shape[1] < n else (x @ x.T)
    eig = np.linalg.eigvalsh(gram / n)
    eig = eig[eig > 1e-12]
    eig = eig / eig.sum()  # exactly 1 for unit rows; guards rounding
    return float(np.exp(-np.sum(eig * np.log(eig))))


def centroid_distance(vectors: np.ndarray) -> float:
    """Mean cosine distance of unit vectors to their (normalised) mean."""
    centre = vectors.mean(axis=0)
    norm = np.linalg.norm(centre)
    if norm == 0:
        return 1.0
    return float(np.mean(1.0 - vectors @ (centre / norm)))


def pairwise_distance(vectors: np.ndarray) -> float:
    """Mean cosine distance over all pairs of distinct unit vectors, in O(n d)."""
    n = vectors.shape[0]
    if n < 2:
        return 0.0
    total = vectors.sum(axis=0, dtype=np.float64)
    self_sim = float(np.sum(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)))
    mean_sim = (float(total @ total) - self_sim) / (n * (n - 1))
    return 1.0 - mean_sim


def cluster_entropy(labels: np.ndarray) -> float:
    """Shannon entropy (bits) of a group's spread over clusters."""
    if len(labels) == 0:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p))) + 0.0


def coverage(group_labels: np.ndarray, positive_labels: np.ndarray) -> tuple[int, int]:
    """(clusters of real positives that the group reaches, clusters real positives occupy)."""
    positive = set(np.unique(positive_labels).tolist())
    reached = positive & set(np.unique(group_labels).tolist())
    return len(reached), len(positive)


def nearest_real(synthetic: np.ndarray, real: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each synthetic vector, the cosine similarity of its nearest real vector, and its index."""
    best = np.full(synthetic.shape[0], -np.inf, dtype=np.float32)
    where = np.zeros(synthetic.shape[0], dtype=np.int64)
    for start in range(0, real.shape[0], chunk):
        sims = synthetic @ real[start : start + chunk].T
        arg = sims.argmax(axis=1)
        val = sims[np.arange(sims.shape[0]), arg]
        better = val > best
        best[better] = val[better]
        where[better] = arg[better] + start
    return best, where


# ------------------------------------------------------------------------------ per group


def vendi_scores(
    groups: Sequence[Group], sampled: dict[str, np.ndarray], roles: dict[str, str], vendi_n: int, seed: int
) -> tuple[dict[str, float], float | None]:
    """Each group's Vendi score on a seeded subsample of ``vendi_n`` posts, and the real
    positives' (pooled over their groups when there are several; None when there are none)."""
    vendi = {}
    for g in groups:
        v = sampled[g.name]
        pick = draw(len(v), vendi_n, seed, g.name, stream=1) if len(v) > vendi_n else np.arange(len(v))
        vendi[g.name] = vendi_score(v[pick])
    positive_groups = [g.name for g in groups if roles[g.name] == ROLE_POSITIVES]
    if not positive_groups:
        return vendi, None
    if len(positive_groups) == 1:
        return vendi, vendi[positive_groups[0]]
    pooled = np.concatenate([sampled[n] for n in positive_groups])
    # the pooled draw is seeded as a group named "real positives"
    return vendi, vendi_score(pooled[draw(len(pooled), vendi_n, seed, "real positives", stream=1)])


def copying(
    groups: Sequence[Group], vectors: dict[str, np.ndarray], roles: dict[str, str], threshold: float, closest: int
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Every synthetic post against every real post (all of them, not only the sample): each
    synthetic group's share of posts at or above ``threshold`` (None for real groups), and the
    ``closest`` closest pairs, most similar first."""
    real_groups = [g for g in groups if roles[g.name] != ROLE_SYNTHETIC]
    dim = next(iter(vectors.values())).shape[1]
    real_vectors = np.concatenate([vectors[g.name] for g in real_groups]) if real_groups else np.zeros((0, dim), np.float32)
    real_refs = [(g, i) for g in real_groups for i in range(len(g.texts))]
    candidates: list[tuple[float, str, str, Group, int, int]] = []
    copy_share: dict[str, float | None] = {}
    for g in groups:
        if roles[g.name] != ROLE_SYNTHETIC or not len(real_vectors):
            copy_share[g.name] = None
            continue
        best, where = nearest_real(vectors[g.name], real_vectors)
        copy_share[g.name] = float(np.mean(best >= threshold))
        own_ids = post_ids(g)
        # Only this group's top candidates can make the overall list.
        for i in np.argsort(-best, kind="stable")[: closest]:
            candidates.append((-float(best[i]), g.name, str(own_ids[i]), g, int(i), int(where[i])))
    candidates.sort(key=lambda c: c[:3])
    pairs = []
    for neg_sim, name, sid, g, i, w in candidates[: closest]:
        rg, ri = real_refs[w]
        pairs.append({
            "similarity": -neg_sim, "group": name, "synthetic_id": sid, "synthetic_text": g.texts[i],
            "real_id": str(post_ids(rg)[ri]), "real_text": rg.texts[ri],
        })
    return copy_share, pairs


def group_rows(
    groups: Sequence[Group], roles: dict[str, str], sampled: dict[str, np.ndarray], label_of: dict[str, np.ndarray],
    vendi: dict[str, float], copy_share: dict[str, float | None],
) -> list[dict[str, Any]]:
    """The measures of each group (``metrics["groups"]``), without the summary line."""
    positive_groups = [g.name for g in groups if roles[g.name] == ROLE_POSITIVES]
    positive_labels = np.concatenate([label_of[n] for n in positive_groups]) if positive_groups else np.zeros(0, dtype=np.int64)
    rows = []
    for g in groups:
        lab = label_of[g.name]
        row: dict[str, Any] = {
            "group": g.name,
            "role": roles[g.name],
            "posts": int(len(lab)),
            "vendi": vendi[g.name],
            "centroid_distance": centroid_distance(sampled[g.name]),
            "pairwise_distance": pairwise_distance(sampled[g.name]),
            "clusters": int(len(np.unique(lab))),
            "positive_coverage": None,
            "positive_clusters_reached": None,
            "positive_clusters": None,
            "cluster_entropy": cluster_entropy(lab),
            "copy_share": copy_share[g.name],
        }
        if roles[g.name] == ROLE_SYNTHETIC and positive_groups:
            reached, occupied = coverage(lab, positive_labels)
            row.update(positive_coverage=reached / occupied, positive_clusters_reached=reached, positive_clusters=occupied)
        rows.append(row)
    return rows


def summary_line(row: dict[str, Any], ref_vendi: float | None, vendi_n: int, k: int, threshold: float) -> str:
    """The one-line verdict: what the paper showed by eye, in numbers."""
    name, vendi = row["group"], row["vendi"]
    if row["role"] == ROLE_SYNTHETIC and ref_vendi is not None:
        text = f"{name}: Vendi {vendi:.1f} vs {ref_vendi:.1f} for real positives at n = {vendi_n:,}"
    else:
        text = f"{name}: Vendi {vendi:.1f} at n = {vendi_n:,}"
    if row["positive_clusters"] is not None:
        text += f"; reaches {row['positive_clusters_reached']} of {row['positive_clusters']} positive clusters"
    else:
        text += f"; occupies {row['clusters']} of {k} clusters"
    if row["copy_share"] is not None:
        text += f"; {row['copy_share']:.1%} within cosine {threshold:g} of a real post"
    return text
