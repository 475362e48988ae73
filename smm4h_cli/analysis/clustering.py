"""The paper's Figure 2 (§3.3.1) and diversity in embedding space, as numbers per group.

Every post is embedded with a sentence-transformers model (the embedded all-MiniLM-L6-v2 by
default), the groups are sampled to equal size (the same posts the n-gram analysis samples),
clustered with k-means and projected to two dimensions with t-SNE, both from scikit-learn.
Per group, beyond the paper's picture:

* dispersion: mean cosine distance to the group's centroid, and mean pairwise cosine distance;
* the Vendi score (Friedman & Dieng, 2023): exp of the Shannon entropy of the eigenvalues of
  K/n, K the cosine-similarity matrix; the effective number of distinct posts, computed on
  samples of the same size ``vendi_n`` for every group so that scores compare;
* cluster coverage: of the k-means clusters real positives occupy, how many a synthetic group
  reaches; and the entropy (bits) of each group's spread over the clusters;
* copying: for each synthetic post, the cosine similarity of its nearest real post (every real
  post, not only the sample: a copied few-shot example may lie outside it); the share at or above
  ``copy_threshold``, and the closest pairs.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl

from smm4h_cli.analysis.embeddings import Embedder, SentenceEmbedder, check_model, embed_texts, model_label
from smm4h_cli.analysis.ngrams import Group
from smm4h_cli.errors import InputError
from smm4h_cli.io import atomic_write, write_json

ROLE_SYNTHETIC = "synthetic"
ROLE_POSITIVES = "real positives"
ROLE_NEGATIVES = "real negatives"
ROLE_REAL = "real"

#: ``progress(stage, done, total)``: stage is "embed" (done/total posts), "k-means" or "t-SNE".
Progress = Callable[[str, int, int], None]

#: Below this many points, k-means and t-SNE run on one OpenMP thread.
SMALL_SAMPLE = 5000

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class EmbedClusterOptions:
    """Options of the embedding analysis.

    Attributes:
        k: k-means clusters (default 10), or ``"auto"``: the k in ``k_range`` with the best
            silhouette score. Every group needs at least k posts after sampling.
        sample: posts per group; every group is sampled to ``min(sample, smallest group)``
            (default 1000, the paper's sample size); 0 uses every post.
        seed: seed of the sampling, k-means, t-SNE and the Vendi subsamples.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        cache_dir: folder of the embedding cache (Parquet, keyed by model and text hash);
            None: no cache.
        synthetic: names of the synthetic groups (a file's name also covers its
            ``name/label N`` groups).
        positives: names of further groups of real positive posts (such as a file that holds
            only label 1); groups named ``.../label 1`` are real positives anyway.
        model: a sentence-transformers model id or folder; None: the embedded all-MiniLM-L6-v2.
        perplexity: t-SNE perplexity (default 30; lowered to (n - 1) / 3 for tiny samples).
        copy_threshold: cosine similarity at or above which a synthetic post counts as a copy
            of its nearest real post (default 0.9).
        batch_size: posts per encoding batch (default 64).
        k_range: smallest and largest k that ``k="auto"`` tries (default 2..20).
        closest: how many closest synthetic/real pairs to list (default 10).
    """

    k: int | str = 10
    sample: int = 1000
    seed: int = 0
    device: str = "auto"
    cache_dir: Path | None = None
    synthetic: tuple[str, ...] = ()
    positives: tuple[str, ...] = ()
    model: str | None = None
    perplexity: float = 30.0
    copy_threshold: float = 0.9
    batch_size: int = 64
    k_range: tuple[int, int] = (2, 20)
    closest: int = 10

    def __post_init__(self) -> None:
        k = self.k
        if isinstance(k, str):
            k = k.strip().lower()
            if k != "auto":
                try:
                    k = int(k)
                except ValueError:
                    raise InputError(f"--k takes a number of clusters (2 or more) or 'auto'; got '{self.k}'.") from None
        if isinstance(k, bool) or (not isinstance(k, (int, str))) or (isinstance(k, int) and k < 2):
            raise InputError(f"--k takes a number of clusters (2 or more) or 'auto'; got {self.k!r}.")
        object.__setattr__(self, "k", k)
        if self.sample < 0:
            raise InputError(f"--sample must be 0 (all posts) or a positive size; got {self.sample}.")
        if not self.perplexity > 0:
            raise InputError(f"--perplexity must be positive (t-SNE's usual range is 5 to 50); got {self.perplexity}.")
        if not -1.0 <= self.copy_threshold <= 1.0:
            raise InputError(f"--copy-threshold is a cosine similarity between -1 and 1; got {self.copy_threshold}.")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}.")
        if not _DEVICE.match(self.device):
            raise InputError(f"--device must be auto, cpu, cuda or cuda:N; got '{self.device}'.")
        low, high = self.k_range
        if not 2 <= low <= high:
            raise InputError(f"the k range for --k auto must satisfy 2 <= low <= high; got {self.k_range}.")
        if self.closest < 0:
            raise InputError(f"closest pairs to list must be 0 or more; got {self.closest}.")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "synthetic", tuple(self.synthetic))
        object.__setattr__(self, "positives", tuple(self.positives))
        check_model(self.model)


@dataclass
class Result:
    """What ``embed_cluster`` found: one row per sampled post, and the metrics."""

    points: pl.DataFrame  # id, group, text, x, y, cluster
    metrics: dict[str, Any]
    encoded: int = 0  # texts encoded by the model in this run (the rest came from the cache)
    roles: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------ measures


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


# ------------------------------------------------------------------------------ the analysis


def role_of(name: str, options: EmbedClusterOptions) -> str:
    """synthetic, real positives, real negatives or real (see the module docstring)."""
    if any(name == s or name.startswith(f"{s}/label ") for s in options.synthetic):
        return ROLE_SYNTHETIC
    if name in options.positives or name.endswith("/label 1"):
        return ROLE_POSITIVES
    if name.endswith("/label 0"):
        return ROLE_NEGATIVES
    return ROLE_REAL


def _rng(seed: int, name: str, stream: int = 0) -> np.random.Generator:
    # Same stream as analysis.ngrams.equal_size_sample for stream 0: the same posts are sampled.
    key = [seed, zlib.crc32(name.encode("utf-8"))] + ([stream] if stream else [])
    return np.random.default_rng(key)


def sample_indices(sizes: dict[str, int], sample: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of the equal-size sample of each group (all indices when ``sample`` is 0)."""
    if sample == 0:
        return {name: np.arange(n) for name, n in sizes.items()}
    size = min([sample] + list(sizes.values()))
    return {name: np.sort(_rng(seed, name).choice(n, size=size, replace=False)) for name, n in sizes.items()}


def _check_groups(groups: Sequence[Group]) -> None:
    if not groups:
        raise InputError("no groups of posts to compare: give at least one file.")
    names = [g.name for g in groups]
    for name in names:
        if names.count(name) > 1:
            raise InputError(f"two groups are both called '{name}'; give the files different names.")
    for g in groups:
        if not g.texts:
            raise InputError(f"group '{g.name}' has no posts; every group needs posts to embed. Remove the file or add posts.")
        if g.ids is not None and len(g.ids) != len(g.texts):
            raise InputError(f"group '{g.name}' has {len(g.ids)} ids for {len(g.texts)} posts.")


def _choose_k(x: np.ndarray, options: EmbedClusterOptions, high: int) -> tuple[int, dict[int, float]]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    low = options.k_range[0]
    high = min(options.k_range[1], high, x.shape[0] - 1)
    scores: dict[int, float] = {}
    for k in range(low, high + 1):
        labels = KMeans(n_clusters=k, n_init=3, random_state=options.seed).fit_predict(x)
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(x, labels, sample_size=min(x.shape[0], 2000), random_state=options.seed))
    if not scores:
        return low, scores
    best = max(scores.values())
    return min(k for k, s in scores.items() if s == best), scores


def embed_cluster(
    groups: list[Group],
    options: EmbedClusterOptions = EmbedClusterOptions(),
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> Result:
    """Embed, sample, cluster, project and measure ``groups``; pure, no printing.

    ``embedder`` replaces the sentence-transformers model named by ``options.model`` (it is
    called with the texts that are not in the cache, and must return unit vectors); the cache
    key stays ``options.model``'s name.
    """
    from sklearn.cluster import KMeans
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    _check_groups(groups)
    roles = {g.name: role_of(g.name, options) for g in groups}
    picks = sample_indices({g.name: len(g.texts) for g in groups}, options.sample, options.seed)
    per_group = min(len(p) for p in picks.values())
    need = options.k_range[0] if options.k == "auto" else int(options.k)
    if per_group < need:
        small = min(groups, key=lambda g: len(g.texts))
        what = "--k auto (which tries k from 2)" if options.k == "auto" else f"--k {options.k} clusters"
        if len(small.texts) < need:
            raise InputError(
                f"group '{small.name}' has {len(small.texts)} post{'s' * (len(small.texts) != 1)}, fewer than {what}. "
                f"Lower --k, or add posts to the group."
            )
        raise InputError(f"--sample {options.sample} leaves {per_group} posts per group, fewer than {what}. Raise --sample or lower --k.")

    # Embed every post once (copying compares against all real posts, not only the sample).
    all_texts = [t for g in groups for t in g.texts]
    model = model_label(options.model)
    if embedder is None:
        embedder = SentenceEmbedder(options.model, options.device, options.batch_size)

    def tell_embed(done: int, total: int) -> None:
        if progress:
            progress("embed", done, total)

    vectors, encoded = embed_texts(all_texts, embedder, model, options.cache_dir, tell_embed if progress else None)
    offsets, start = {}, 0
    for g in groups:
        offsets[g.name] = (start, start + len(g.texts))
        start += len(g.texts)

    def group_vectors(g: Group) -> np.ndarray:
        a, b = offsets[g.name]
        return vectors[a:b]

    sampled = {g.name: group_vectors(g)[picks[g.name]] for g in groups}
    x = np.concatenate([sampled[g.name] for g in groups]).astype(np.float32)

    # On small samples OpenMP threads cost more than they give: right after the model's own
    # thread pool has run, a small t-SNE measured 5-15x slower with two threads than with one.
    threads = 1 if x.shape[0] < SMALL_SAMPLE else None
    with threadpool_limits(threads, user_api="openmp"):
        if progress:
            progress("k-means", 0, 1)
        k_scores: dict[int, float] = {}
        if options.k == "auto":
            k, k_scores = _choose_k(x, options, per_group)
        else:
            k = int(options.k)
        labels = KMeans(n_clusters=k, n_init=10, random_state=options.seed).fit_predict(x)
        if progress:
            progress("k-means", 1, 1)
            progress("t-SNE", 0, 1)
        perplexity = float(min(options.perplexity, max(1.0, (x.shape[0] - 1) / 3)))
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=options.seed).fit_transform(x)
        if progress:
            progress("t-SNE", 1, 1)

    # Points: one row per sampled post.
    ids, names, texts = [], [], []
    for g in groups:
        own_ids = _ids(g)
        for i in picks[g.name]:
            ids.append(str(own_ids[i]))
            texts.append(g.texts[i])
            names.append(g.name)
    points = pl.DataFrame(
        {"id": ids, "group": names, "text": texts, "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64), "cluster": labels.astype(np.int64)}
    )

    label_of, start = {}, 0
    for g in groups:
        label_of[g.name] = labels[start : start + len(picks[g.name])]
        start += len(picks[g.name])

    # Vendi on samples of one size for every group.
    vendi_n = per_group
    vendi = {}
    for g in groups:
        v = sampled[g.name]
        pick = np.sort(_rng(options.seed, g.name, 1).choice(len(v), size=vendi_n, replace=False)) if len(v) > vendi_n else np.arange(len(v))
        vendi[g.name] = vendi_score(v[pick])
    positive_groups = [g.name for g in groups if roles[g.name] == ROLE_POSITIVES]
    if not positive_groups:
        ref_vendi = None
    elif len(positive_groups) == 1:
        ref_vendi = vendi[positive_groups[0]]
    else:
        pooled = np.concatenate([sampled[n] for n in positive_groups])
        ref_vendi = vendi_score(pooled[np.sort(_rng(options.seed, "real positives", 1).choice(len(pooled), size=vendi_n, replace=False))])
    positive_labels = np.concatenate([label_of[n] for n in positive_groups]) if positive_groups else np.zeros(0, dtype=np.int64)

    # Copying: every synthetic post against every real post.
    real_groups = [g for g in groups if roles[g.name] != ROLE_SYNTHETIC]
    real_vectors = np.concatenate([group_vectors(g) for g in real_groups]) if real_groups else np.zeros((0, vectors.shape[1]), np.float32)
    real_refs = [(g, i) for g in real_groups for i in range(len(g.texts))]
    candidates: list[tuple[float, str, str, Group, int, int]] = []
    copy_share: dict[str, float | None] = {}
    for g in groups:
        if roles[g.name] != ROLE_SYNTHETIC or not len(real_vectors):
            copy_share[g.name] = None
            continue
        best, where = nearest_real(group_vectors(g), real_vectors)
        copy_share[g.name] = float(np.mean(best >= options.copy_threshold))
        own_ids = _ids(g)
        # Only this group's top candidates can make the overall list.
        for i in np.argsort(-best, kind="stable")[: options.closest]:
            candidates.append((-float(best[i]), g.name, str(own_ids[i]), g, int(i), int(where[i])))
    candidates.sort(key=lambda c: c[:3])
    pairs = []
    for neg_sim, name, sid, g, i, w in candidates[: options.closest]:
        rg, ri = real_refs[w]
        pairs.append({
            "similarity": -neg_sim, "group": name, "synthetic_id": sid, "synthetic_text": g.texts[i],
            "real_id": str(_ids(rg)[ri]), "real_text": rg.texts[ri],
        })

    rows = []
    for g in groups:
        lab = label_of[g.name]
        row: dict[str, Any] = {
            "group": g.name,
            "role": roles[g.name],
            "posts": int(len(picks[g.name])),
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
        row["summary"] = _summary(row, ref_vendi, vendi_n, k, options.copy_threshold)
        rows.append(row)

    settings: dict[str, Any] = {
        "model": model,
        "k": k,
        "k_requested": options.k,
        "vendi_n": vendi_n,
        "copy_threshold": options.copy_threshold,
        "real_positives_vendi": ref_vendi,
        "sample": options.sample,
        "posts_per_group": per_group if options.sample else None,
        "seed": options.seed,
        "perplexity": perplexity,
        "synthetic": [g.name for g in groups if roles[g.name] == ROLE_SYNTHETIC],
    }
    if k_scores:
        settings["silhouette"] = {str(kk): s for kk, s in k_scores.items()}
    metrics = {"settings": settings, "groups": rows, "closest_pairs": pairs}
    return Result(points=points, metrics=metrics, encoded=encoded, roles=roles)


def _ids(g: Group) -> list[str]:
    """The group's post ids, or ``<group>-<row>`` where it has none."""
    return g.ids if g.ids is not None else [f"{g.name}-{i}" for i in range(len(g.texts))]


def _summary(row: dict[str, Any], ref_vendi: float | None, vendi_n: int, k: int, threshold: float) -> str:
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


# ------------------------------------------------------------------------------ roles of the inputs


def _is_synthetic(frame: pl.DataFrame) -> bool:
    """Written by ``smm4h generate``: every record has ``source == "synthetic"``."""
    return "source" in frame.columns and frame.height > 0 and bool((frame["source"].cast(pl.String) == "synthetic").all())


def _only_positives(frame: pl.DataFrame) -> bool:
    return "label" in frame.columns and frame.height > 0 and bool((frame["label"] == 1).all())


def infer_roles(named: Sequence[tuple[str, pl.DataFrame]], synthetic: Sequence[str] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(synthetic, positives)`` for ``EmbedClusterOptions``: the named files that are synthetic
    (named in ``synthetic``, or written by ``smm4h generate``) and the other files that hold only
    real positives (label 1 everywhere), whose clusters the synthetic posts should reach."""
    syn = tuple(name for name, frame in named if name in synthetic or _is_synthetic(frame))
    pos = tuple(name for name, frame in named if name not in syn and _only_positives(frame))
    return syn, pos


# ------------------------------------------------------------------------------ outputs

OUTPUT_FILES = ("tsne.png", "tsne.svg", "points.parquet", "metrics.json")


def table_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics as one flat row per group: the table of ``embed-cluster`` and of the study report."""
    rows = []
    for g in metrics["groups"]:
        rows.append({
            "group": g["group"],
            "role": g["role"],
            "posts": g["posts"],
            "Vendi": g["vendi"],
            "centroid dist.": g["centroid_distance"],
            "pairwise dist.": g["pairwise_distance"],
            "clusters": g["clusters"],
            "positive coverage": None if g["positive_coverage"] is None else f"{g['positive_clusters_reached']}/{g['positive_clusters']}",
            "entropy (bits)": g["cluster_entropy"],
            "copies": None if g["copy_share"] is None else f"{g['copy_share']:.1%}",
        })
    return rows


def existing_outputs(out_dir: Path, plot: bool = True) -> list[Path]:
    names = OUTPUT_FILES if plot else ("points.parquet", "metrics.json")
    return [Path(out_dir) / n for n in names if (Path(out_dir) / n).exists()]


def write_outputs(result: Result, out_dir: Path, plot: bool = True, seed: int = 0) -> list[Path]:
    """Write ``points.parquet``, ``metrics.json`` and (with ``plot``) ``tsne.png``/``tsne.svg``.

    Each file is written atomically; ``seed`` fixes the order in which points are drawn.
    Returns the paths written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --out takes a folder.")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if plot:
        from smm4h_cli.analysis.plots import DPI, tsne_figure

        fig = tsne_figure(result.points, result.roles, result.metrics, seed=seed)
        for name in ("tsne.png", "tsne.svg"):
            target = out / name
            atomic_write(target, lambda tmp, fmt=name.rsplit(".", 1)[1]: fig.savefig(tmp, format=fmt, dpi=DPI))
            written.append(target)
    atomic_write(out / "points.parquet", lambda tmp: result.points.write_parquet(tmp))
    write_json(out / "metrics.json", _jsonable(result.metrics))
    written += [out / "points.parquet", out / "metrics.json"]
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
