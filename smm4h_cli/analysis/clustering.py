"""The paper's Figure 2 (§3.3.1) and diversity in embedding space, as numbers per group.

Every post is embedded with a sentence-transformers model (the embedded all-MiniLM-L6-v2 by
default), the groups are sampled to equal size (the same posts the n-gram analysis samples),
clustered with k-means (scikit-learn) and projected to two dimensions with t-SNE (``projection``:
scikit-learn's Barnes-Hut, openTSNE's FFT gradient on large samples).
Per group, beyond the paper's picture:

* dispersion: mean cosine distance to the group's centroid, and mean pairwise cosine distance;
* the Vendi score (Friedman & Dieng, 2023): exp of the Shannon entropy of the eigenvalues of
  K/n, K the cosine-similarity matrix; the effective number of distinct posts, computed on
  samples of the same size ``vendi_n`` for every group so that scores compare;
* cluster coverage: of the k-means clusters real positives occupy, how many a synthetic group
  reaches; and the entropy (bits) of each group's spread over the clusters;
* copying: for each synthetic post, the cosine similarity of its nearest real post (every real
  post, not only the sample: a copied few-shot example may lie outside it); the share at or above
  ``copy_threshold``, and the closest pairs;
* realism beside diversity: k-NN precision, recall, density and coverage of each synthetic group
  against the real positives (Kynkäänniemi et al., 2019; Naeem et al., 2020; k = 5, cosine
  distance), on the same ``vendi_n``-post subsamples as Vendi.

The measures are in ``diversity``; groups, roles and the equal-size sampler in ``groups``; the
output files and the table in ``cluster_outputs``.
``embed_cluster`` is a pipeline of the steps below, each a function of plain values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from smm4h_cli.analysis.diversity import copying, group_rows, realism_scores, summary_line, vendi_scores
from smm4h_cli.analysis.embeddings import PRECISIONS, Embedder, SentenceEmbedder, cache_key, check_model, embed_texts, model_label
from smm4h_cli.analysis.groups import ROLE_SYNTHETIC, Group, equal_size_indices, post_ids, role_of
from smm4h_cli.analysis.projection import FFT_FROM, FFT_INTS_IN_INTERVAL, tsne, tsne_backend
from smm4h_cli.errors import InputError
from smm4h_cli.progress import ProgressEvent, ProgressFn

#: ``progress`` hears the stages "embedding posts" (done/total posts), "k-means" and "t-SNE" (0/1, 1/1).
Progress = ProgressFn

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
        device: ``auto`` (CUDA when present), ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (checked on load).
        cache_dir: folder of the embedding cache (Parquet, keyed by model and text hash);
            None: no cache.
        synthetic: names of the synthetic groups (a file's name also covers its
            ``name/label N`` groups).
        positives: names of further groups of real positive posts (such as a file that holds
            only label 1); groups named ``.../label 1`` are real positives anyway.
        model: a sentence-transformers model id or folder; None: the embedded all-MiniLM-L6-v2.
        perplexity: t-SNE perplexity (default 30; lowered to (n - 1) / 3 for tiny samples).
        fft_from: from this many sampled points on, t-SNE runs on openTSNE's FFT gradient
            instead of scikit-learn's Barnes-Hut (default ``projection.FFT_FROM``).
        precision: arithmetic of the encoder: ``fp32``, ``bf16`` (autocast) or ``auto`` (see
            ``embeddings.resolve_embed_precision``).
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
    fft_from: int = FFT_FROM
    precision: str = "fp32"
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
        if self.fft_from < 0:
            raise InputError(f"the openTSNE threshold must be 0 or more points; got {self.fft_from}.")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}; got '{self.precision}'.")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1; got {self.batch_size}.")
        if not _DEVICE.match(self.device):
            raise InputError(f"--device must be auto, cpu, mps, cuda or cuda:N; got '{self.device}'.")
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


# ------------------------------------------------------------------------------ the analysis


def embed_cluster(
    groups: list[Group],
    options: EmbedClusterOptions = EmbedClusterOptions(),
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> Result:
    """Embed, sample, cluster, project and measure ``groups``; pure, no printing.

    The steps: check the groups, draw the equal-size samples (``sample_groups``), embed every
    post (``embed_groups``), k-means and t-SNE on the samples (``cluster_and_project``), then
    per group the Vendi score, copying, the measures and the one-line verdict (``diversity``).

    ``embedder`` replaces the sentence-transformers model named by ``options.model`` (it is
    called with the texts that are not in the cache, and must return unit vectors); the cache
    key is ``options.model``'s (``embeddings.cache_key``), with the embedder's ``precision`` and
    ``device`` when it has a precision besides fp32.
    """
    check_groups(groups)
    roles = {g.name: role_of(g.name, options.synthetic, options.positives) for g in groups}
    picks = sample_groups(groups, options)
    vectors, encoded = embed_groups(groups, options, progress, embedder)
    sampled = {g.name: vectors[g.name][picks[g.name]] for g in groups}
    x = np.concatenate([sampled[g.name] for g in groups]).astype(np.float32)
    per_group = min(len(p) for p in picks.values())
    k, k_scores, labels, xy, perplexity = cluster_and_project(x, options, per_group, progress)

    points = sample_points(groups, picks, xy, labels)
    label_of = split_labels(groups, picks, labels)
    vendi_n = per_group  # Vendi and realism on samples of one size for every group
    vendi, ref_vendi = vendi_scores(groups, sampled, roles, vendi_n, options.seed)
    realism, realism_k = realism_scores(groups, sampled, roles, vendi_n, options.seed)
    copy_share, pairs = copying(groups, vectors, roles, options.copy_threshold, options.closest)
    rows = group_rows(groups, roles, sampled, label_of, vendi, copy_share, realism)
    for row in rows:
        row["summary"] = summary_line(row, ref_vendi, vendi_n, k, options.copy_threshold, realism_k)

    backend = tsne_backend(x.shape[0], options.fft_from)
    settings: dict[str, Any] = {
        "model": model_label(options.model),
        "k": k,
        "k_requested": options.k,
        "vendi_n": vendi_n,
        "copy_threshold": options.copy_threshold,
        "real_positives_vendi": ref_vendi,
        "realism_k": realism_k,
        "sample": options.sample,
        "posts_per_group": per_group if options.sample else None,
        "seed": options.seed,
        "perplexity": perplexity,
        "tsne": backend,
        "tsne_grid": FFT_INTS_IN_INTERVAL if backend == "opentsne" else None,  # openTSNE's ints_in_interval
        "synthetic": [g.name for g in groups if roles[g.name] == ROLE_SYNTHETIC],
    }
    if k_scores:
        settings["silhouette"] = {str(kk): s for kk, s in k_scores.items()}
    metrics = {"settings": settings, "groups": rows, "closest_pairs": pairs}
    return Result(points=points, metrics=metrics, encoded=encoded, roles=roles)


def check_groups(groups: Sequence[Group]) -> None:
    """At least one group; distinct names; posts in every group; ids parallel to texts."""
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


def sample_groups(groups: Sequence[Group], options: EmbedClusterOptions) -> dict[str, np.ndarray]:
    """Positions of each group's equal-size sample (the posts ``ngrams`` samples too); an error
    when the sample is smaller than the clusters asked for."""
    indices, _ = equal_size_indices(groups, options.sample, options.seed)
    picks = {g.name: idx for g, idx in zip(groups, indices)}
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
    return picks


def embed_groups(
    groups: Sequence[Group], options: EmbedClusterOptions, progress: Progress | None, embedder: Embedder | None
) -> tuple[dict[str, np.ndarray], int]:
    """Every post of every group embedded once (copying compares against all real posts, not only
    the sample): the vectors of each group, and how many texts the model encoded."""
    if embedder is None:
        embedder = SentenceEmbedder(options.model, options.device, options.batch_size, options.precision)

    all_texts = [t for g in groups for t in g.texts]
    key = cache_key(options.model, getattr(embedder, "precision", "fp32"), getattr(embedder, "device", "cpu"))
    vectors, encoded = embed_texts(all_texts, embedder, key, options.cache_dir, progress)
    per_group, start = {}, 0
    for g in groups:
        per_group[g.name] = vectors[start : start + len(g.texts)]
        start += len(g.texts)
    return per_group, encoded


def cluster_and_project(
    x: np.ndarray, options: EmbedClusterOptions, per_group: int, progress: Progress | None
) -> tuple[int, dict[int, float], np.ndarray, np.ndarray, float]:
    """k-means (choosing k by silhouette for ``k="auto"``) and t-SNE of the sampled vectors:
    ``(k, silhouette by k, cluster labels, 2-d coordinates, perplexity used)``."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    # On small samples OpenMP threads cost more than they give: right after the model's own thread
    # pool has run, a small t-SNE measured 5-15x slower with two threads than one (the map is the same).
    threads = 1 if x.shape[0] < SMALL_SAMPLE else None
    with threadpool_limits(threads, user_api="openmp"):
        if progress:
            progress(ProgressEvent("k-means", 0, 1))
        k_scores: dict[int, float] = {}
        if options.k == "auto":
            k, k_scores = _choose_k(x, options, per_group)
        else:
            k = int(options.k)
        labels = KMeans(n_clusters=k, n_init=10, random_state=options.seed).fit_predict(x)
        if progress:
            progress(ProgressEvent("k-means", 1, 1))
            progress(ProgressEvent("t-SNE", 0, 1))
        perplexity = float(min(options.perplexity, max(1.0, (x.shape[0] - 1) / 3)))
        xy = tsne(x, perplexity, options.seed, options.fft_from, threads)
        if progress:
            progress(ProgressEvent("t-SNE", 1, 1))
    return k, k_scores, labels, xy, perplexity


def sample_points(groups: Sequence[Group], picks: dict[str, np.ndarray], xy: np.ndarray, labels: np.ndarray) -> pl.DataFrame:
    """One row per sampled post: id, group, text, x, y, cluster."""
    ids, names, texts = [], [], []
    for g in groups:
        own_ids = post_ids(g)
        for i in picks[g.name]:
            ids.append(str(own_ids[i]))
            texts.append(g.texts[i])
            names.append(g.name)
    return pl.DataFrame(
        {"id": ids, "group": names, "text": texts, "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64), "cluster": labels.astype(np.int64)}
    )


def split_labels(groups: Sequence[Group], picks: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    """The cluster labels of each group's sampled posts (``labels`` runs over the groups in order)."""
    label_of, start = {}, 0
    for g in groups:
        label_of[g.name] = labels[start : start + len(picks[g.name])]
        start += len(picks[g.name])
    return label_of


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
