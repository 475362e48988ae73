"""Diversity measures of a group of embedded posts: pure functions of arrays, no I/O, no models.

The vectors are L2-normalised rows (sentence embeddings), so dot products are cosine similarities.

* ``vendi_score`` (Friedman & Dieng, 2023): exp of the Shannon entropy of the eigenvalues of K/n,
  K the cosine-similarity matrix; the effective number of distinct posts.
* ``centroid_distance``, ``pairwise_distance``: dispersion as mean cosine distances.
* ``cluster_entropy``, ``coverage``: how a group spreads over k-means clusters, and how many of
  the clusters real positives occupy it reaches.
* ``nearest_real``: for each synthetic post, its nearest real post (copying).
* ``prdc``: realism beside diversity, k-nearest-neighbour precision and recall (Kynkäänniemi
  et al., NeurIPS 2019) and density and coverage (Naeem et al., ICML 2020) of synthetic posts
  against real ones.

Below them, the measures of each group of an analysis (``vendi_scores``, ``realism_scores``,
``copying``, ``group_rows``) and its one-line verdict (``summary_line``), from vectors and roles.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from smm4h_cli.analysis.groups import ROLE_POSITIVES, ROLE_SYNTHETIC, Group, draw, post_ids

#: Nearest neighbours that set each post's ball in ``prdc`` (k = 5, as Naeem et al. recommend).
REALISM_K = 5

#: Distances within this of a ball's radius count as inside it: the balls are closed, and
#: identical posts (cosine distance 0 up to float rounding) fall in each other's balls.
BALL_TOLERANCE = 1e-6

#: Similarities this far below ``copy_threshold`` still count as copies: in float32 a unit
#: vector's dot product with itself lands up to about 1e-6 either side of 1 (MiniLM, 384
#: dimensions), so without it ``--copy-threshold 1`` missed about half of the verbatim copies.
COPY_TOLERANCE = 1e-5


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


def knn_radii(points: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """Each point's distance to its k-th nearest other point (the radius of its k-NN ball)."""
    from sklearn.neighbors import NearestNeighbors

    # k + 1: each point is its own nearest neighbour at distance 0 (a duplicate may take its
    # place; the (k + 1)-th smallest distance is the same either way).
    distances, _ = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(points).kneighbors(points)
    return distances[:, k]


def _fake_against_real(fake: np.ndarray, real: np.ndarray, real_radii: np.ndarray, fake_radii: np.ndarray, metric: str, working_memory: float = 64):
    """One pass over the fake × real distances, in row chunks of bounded memory (never one full
    matrix): per fake post, in how many real balls it lies; per real post, whether it lies in a
    fake ball, and its distance to the nearest fake post. Each ball has its own radius, so none
    of these is a single k-NN or radius query."""
    from sklearn.metrics import pairwise_distances_chunked

    in_real_balls = np.zeros(len(fake), dtype=np.int64)
    in_a_fake_ball = np.zeros(len(real), dtype=bool)
    nearest_fake = np.full(len(real), np.inf)
    real_limit = real_radii[None, :] + BALL_TOLERANCE
    fake_limit = fake_radii[:, None] + BALL_TOLERANCE

    def reduce(d: np.ndarray, start: int) -> None:
        rows = slice(start, start + len(d))
        in_real_balls[rows] = (d <= real_limit).sum(axis=1)
        in_a_fake_ball[:] |= (d <= fake_limit[rows]).any(axis=0)
        np.minimum(nearest_fake, d.min(axis=0), out=nearest_fake)

    for _ in pairwise_distances_chunked(fake, real, metric=metric, working_memory=working_memory, reduce_func=reduce):
        pass
    return in_real_balls, in_a_fake_ball, nearest_fake


def prdc(real: np.ndarray, fake: np.ndarray, k: int = REALISM_K, metric: str = "cosine") -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` with k-NN balls.

    Each post's ball is centred on it with the radius of its k-th nearest neighbour in its own
    set (closed: a post on the boundary is inside).

    * precision (Kynkäänniemi et al., 2019): share of fake posts inside at least one real
      ball: are the fakes realistic?
    * recall (same): share of real posts inside at least one fake ball: do the fakes span the
      real ones? A few stray fakes with large balls inflate it.
    * density (Naeem et al., 2020): how many real balls hold a fake post, on average, over k.
      About 1 when fakes are distributed as the reals; above 1 when they crowd where the reals
      are dense; unlike precision, not inflated by real outliers' large balls.
    * coverage (same): share of real posts whose own ball holds at least one fake post; robust
      to fake outliers, unlike recall.

    ``metric`` is ``"cosine"`` (for unit vectors, the same balls as ``"euclidean"``: the
    Euclidean distance is sqrt(2 × cosine distance), a monotone map) or ``"euclidean"``.
    Both sets need more than ``k`` points.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if k < 1 or len(real) <= k or len(fake) <= k:
        raise ValueError(f"prdc needs k >= 1 and more than k points in each set; got k = {k}, {len(real)} real, {len(fake)} fake")
    real_radii = knn_radii(real, k, metric)
    in_real_balls, in_a_fake_ball, nearest_fake = _fake_against_real(fake, real, real_radii, knn_radii(fake, k, metric), metric)
    return {
        "precision": float(np.mean(in_real_balls > 0)),
        "recall": float(np.mean(in_a_fake_ball)),
        "density": float(np.mean(in_real_balls) / k),
        "coverage": float(np.mean(nearest_fake <= real_radii + BALL_TOLERANCE)),
    }


# ------------------------------------------------------------------------------ per group

#: The realism keys of a group's row, and the ``prdc`` measure each holds. "knn_coverage"
#: keeps Naeem et al.'s coverage apart from the clusters' ``positive_coverage``.
REALISM_KEYS = {"precision": "precision", "recall": "recall", "density": "density", "knn_coverage": "coverage"}


def size_matched(
    groups: Sequence[Group], sampled: dict[str, np.ndarray], roles: dict[str, str], n: int, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Each group's seeded subsample of ``n`` of its sampled vectors, and the real positives'
    (pooled over their groups when there are several; None when there are none): the posts on
    which Vendi and realism are measured, of one size for every group so that they compare."""
    picked = {}
    for g in groups:
        v = sampled[g.name]
        picked[g.name] = v[draw(len(v), n, seed, g.name, stream=1)] if len(v) > n else v
    positive_groups = [g.name for g in groups if roles[g.name] == ROLE_POSITIVES]
    if not positive_groups:
        return picked, None
    if len(positive_groups) == 1:
        return picked, picked[positive_groups[0]]
    pooled = np.concatenate([sampled[name] for name in positive_groups])
    # the pooled draw is seeded as a group named "real positives"
    return picked, pooled[draw(len(pooled), n, seed, "real positives", stream=1)]


def vendi_scores(
    groups: Sequence[Group], sampled: dict[str, np.ndarray], roles: dict[str, str], vendi_n: int, seed: int
) -> tuple[dict[str, float], float | None]:
    """Each group's Vendi score on its ``size_matched`` subsample of ``vendi_n`` posts, and the
    real positives' (None when there are none)."""
    picked, positives = size_matched(groups, sampled, roles, vendi_n, seed)
    vendi = {name: vendi_score(v) for name, v in picked.items()}
    return vendi, None if positives is None else vendi_score(positives)


def realism_scores(
    groups: Sequence[Group], sampled: dict[str, np.ndarray], roles: dict[str, str], n: int, seed: int, k: int = REALISM_K
) -> tuple[dict[str, dict[str, float] | None], int | None]:
    """``prdc`` of each synthetic group against the real positives, both on the ``size_matched``
    subsamples of ``n`` posts that Vendi uses (None for real groups, and for every group when
    there are no real positives), and the k used: ``k``, lowered to n − 1 for tiny samples
    (None when nothing was measured)."""
    picked, positives = size_matched(groups, sampled, roles, n, seed)
    realism: dict[str, dict[str, float] | None] = {g.name: None for g in groups}
    synthetic = [g.name for g in groups if roles[g.name] == ROLE_SYNTHETIC]
    if positives is None or not synthetic:
        return realism, None
    used = min([k, len(positives) - 1] + [len(picked[name]) - 1 for name in synthetic])
    if used < 1:
        return realism, None
    for name in synthetic:
        realism[name] = prdc(positives, picked[name], used)
    return realism, used


def copying(
    groups: Sequence[Group], vectors: dict[str, np.ndarray], roles: dict[str, str], threshold: float, closest: int
) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Every synthetic post against every real post (all of them, not only the sample): each
    synthetic group's share of posts at or above ``threshold`` (less ``COPY_TOLERANCE``; None for real groups), and the
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
        copy_share[g.name] = float(np.mean(best >= threshold - COPY_TOLERANCE))
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
    vendi: dict[str, float], copy_share: dict[str, float | None], realism: dict[str, dict[str, float] | None] | None = None,
) -> list[dict[str, Any]]:
    """The measures of each group (``metrics["groups"]``), without the summary line.

    ``realism`` (from ``realism_scores``) fills ``precision``, ``recall``, ``density`` and
    ``knn_coverage``; None where not measured.
    """
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
        measured = (realism or {}).get(g.name)
        for key, name in REALISM_KEYS.items():
            row[key] = None if measured is None else measured[name]
        if roles[g.name] == ROLE_SYNTHETIC and positive_groups:
            reached, occupied = coverage(lab, positive_labels)
            row.update(positive_coverage=reached / occupied, positive_clusters_reached=reached, positive_clusters=occupied)
        rows.append(row)
    return rows


def summary_line(
    row: dict[str, Any], ref_vendi: float | None, vendi_n: int, k: int, threshold: float, realism_k: int | None = None
) -> str:
    """The one-line verdict: what the paper showed by eye, in numbers (``realism_k``: the k of
    the realism measures, named in their clause)."""
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
    if row.get("precision") is not None:
        text += (
            f"; against real positives{f' ({realism_k}-NN)' if realism_k else ''}: precision {row['precision']:.2f}, recall {row['recall']:.2f}, "
            f"density {row['density']:.2f}, coverage {row['knn_coverage']:.2f}"
        )
    return text
