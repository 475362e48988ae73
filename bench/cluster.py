"""k-means, t-SNE and the diversity metrics of `smm4h embed-cluster` on 20,000 posts.

PsyTAR has about 6,000 distinct sentences, so the 20,000 points are built from their real
MiniLM embeddings (computed once, cached): the ADR-negative and ADR-positive sentences, each
repeated with a small seeded jitter (cosine about 0.95 to the original) up to their group's size,
and a "synthetic" group of jittered copies of 300 positives (narrow, as the paper found GPT-4's
texts). The embedding step is the subject of bench/embed.py; here the embedder is a lookup of
those vectors, so the times are those of the analysis alone:

1. t-SNE alone, same matrix, same run: scikit-learn's Barnes-Hut ``TSNE(init="pca",
   learning_rate="auto")`` (the baseline) against smm4h's ``projection.tsne`` (openTSNE's FFT
   gradient from ``FFT_FROM`` points on). Prints the speed-up (target >= 3x at 20,000 points)
   and the trustworthiness of each map (``sklearn.manifold.trustworthiness``, 5 neighbours, on
   the same seeded 2,000-point subsample; target: within 0.01 of scikit-learn's).
2. smm4h's whole analysis: ``embed_cluster`` (k-means with k = 10, t-SNE, Vendi, dispersion,
   coverage, copying, closest pairs), each stage timed, then ``write_outputs`` (PNG, SVG,
   Parquet, JSON). Target: 100,000 posts in under 180 s on two cores (``--posts 100000
   --no-baseline``).

    python bench/cluster.py --psytar ../shared/data/psytar [--posts 20000] [--no-baseline] [--no-analysis]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from smm4h_cli.analysis.cluster_outputs import write_outputs  # noqa: E402
from smm4h_cli.analysis.clustering import EmbedClusterOptions, embed_cluster  # noqa: E402
from smm4h_cli.analysis.embeddings import SentenceEmbedder, embed_texts  # noqa: E402
from smm4h_cli.analysis.groups import Group  # noqa: E402
from smm4h_cli.analysis.projection import FFT_FROM, tsne, tsne_backend  # noqa: E402
from smm4h_cli.models import EMBEDDED_MINILM  # noqa: E402


def psytar(folder: Path) -> pl.DataFrame:
    frames = [pl.read_csv(folder / f"{s}.tsv", separator="\t", quote_char='"').select("sentences", "ADR") for s in ("train", "dev", "test")]
    return pl.concat(frames).filter(pl.col("sentences").str.strip_chars() != "").unique("sentences", keep="first", maintain_order=True)


def grow(texts: list[str], vectors: np.ndarray, size: int, rng: np.random.Generator, prefix: str) -> tuple[list[str], np.ndarray]:
    """``size`` points: the originals first, then jittered repeats (cosine about 0.95)."""
    idx = np.arange(size) % len(texts)
    out = vectors[idx].copy()
    extra = np.arange(size) >= len(texts)
    out[extra] += rng.normal(scale=0.33 / np.sqrt(vectors.shape[1]), size=(int(extra.sum()), vectors.shape[1]))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return [f"{texts[i]} [{prefix}{j}]" for j, i in enumerate(idx)], out.astype(np.float32)


def exact_kl(P, y: np.ndarray, rows: int = 1000) -> float:
    """KL(P || Q) of the map ``y`` for the sparse affinities ``P``, Q with the exact normalisation
    (every pair, ``rows`` rows at a time), not a method's own approximation: comparable across methods."""
    n, z = y.shape[0], 0.0
    for s in range(0, n, rows):
        w = 1.0 / (1.0 + ((y[s:s + rows, None, :] - y[None, :, :]) ** 2).sum(-1))
        w[np.arange(w.shape[0]), np.arange(s, s + w.shape[0])] = 0.0
        z += float(w.sum())
    coo = P.tocoo()
    p = coo.data / coo.data.sum()
    q = 1.0 / (1.0 + ((y[coo.row] - y[coo.col]) ** 2).sum(-1)) / z
    return float(np.sum(p * np.log(p / q)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--psytar", type=Path, default=ROOT.parent / "shared" / "data" / "psytar")
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "smm4h-bench-embeddings")
    parser.add_argument("--no-baseline", action="store_true", help="skip the t-SNE comparison against scikit-learn")
    parser.add_argument("--no-analysis", action="store_true", help="only the t-SNE comparison")
    parser.add_argument("--trust-sample", type=int, default=2000)
    args = parser.parse_args()

    data = psytar(args.psytar)
    start = time.perf_counter()
    vectors, encoded = embed_texts(data["sentences"].to_list(), SentenceEmbedder(None, "cpu"), EMBEDDED_MINILM, args.cache_dir)
    print(f"PsyTAR: {data.height:,} distinct sentences embedded ({encoded:,} encoded now, the rest cached) in {time.perf_counter() - start:.1f} s", flush=True)

    rng = np.random.default_rng(args.seed)
    adr = data["ADR"].to_numpy() == 1
    sentences = np.array(data["sentences"].to_list(), dtype=object)
    sizes = {"real negatives": int(args.posts * 0.4), "real positives": int(args.posts * 0.3)}
    sizes["synthetic"] = args.posts - sum(sizes.values())
    neg_t, neg_v = grow(list(sentences[~adr]), vectors[~adr], sizes["real negatives"], rng, "n")
    pos_t, pos_v = grow(list(sentences[adr]), vectors[adr], sizes["real positives"], rng, "p")
    few = rng.choice(int(adr.sum()), size=300, replace=False)
    syn_t, syn_v = grow(list(sentences[adr][few]), vectors[adr][few], sizes["synthetic"], rng, "s")
    lookup = dict(zip(neg_t + pos_t + syn_t, np.concatenate([neg_v, pos_v, syn_v])))

    def embedder(texts, progress=None):
        return np.stack([lookup[t] for t in texts])

    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def span(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return b[0] - a[0], b[1] - a[1]

    x = np.concatenate([neg_v, pos_v, syn_v])
    if not args.no_baseline:
        from sklearn.manifold import TSNE, trustworthiness

        sub = np.random.default_rng(args.seed).choice(x.shape[0], size=min(args.trust_sample, x.shape[0]), replace=False)
        b0 = now()
        base_xy = TSNE(n_components=2, perplexity=30.0, init="pca", learning_rate="auto", random_state=args.seed).fit_transform(x)
        b1 = now()
        ours_xy = tsne(x, 30.0, args.seed)
        b2 = now()
        (bw, bc), (ow, oc) = span(b0, b1), span(b1, b2)
        base_trust = trustworthiness(x[sub], base_xy[sub], n_neighbors=5)
        ours_trust = trustworthiness(x[sub], ours_xy[sub], n_neighbors=5)
        from openTSNE.affinity import PerplexityBasedNN

        P = PerplexityBasedNN(x, perplexity=30.0, n_jobs=-1, random_state=args.seed, verbose=False).P
        print(f"exact KL divergence of each map (the same affinities, openTSNE's, perplexity 30): smm4h {exact_kl(P, ours_xy):.4f}, "
              f"scikit-learn {exact_kl(P, base_xy):.4f} (lower is better; not a target)", flush=True)
        print(
            f"t-SNE of {x.shape[0]:,} points: smm4h ({tsne_backend(x.shape[0])}, FFT from {FFT_FROM:,}) {ow:.1f} s wall / {oc:.1f} s CPU; "
            f"scikit-learn Barnes-Hut {bw:.1f} s wall / {bc:.1f} s CPU: speed-up {bw / ow:.2f}x by wall, {bc / oc:.2f}x by CPU (target >= 3x); "
            f"trustworthiness (5 neighbours, {len(sub):,}-point subsample) smm4h {ours_trust:.4f} vs scikit-learn {base_trust:.4f}, "
            f"difference {ours_trust - base_trust:+.4f} (target within 0.01); load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    if args.no_analysis:
        return

    groups = [Group("psytar/label 0", neg_t), Group("psytar/label 1", pos_t), Group("synthetic", syn_t)]
    options = EmbedClusterOptions(k=args.k, sample=0, seed=args.seed, synthetic=("synthetic",))
    marks: dict[str, tuple[float, float]] = {}

    def progress(event) -> None:
        marks[f"{event.stage} {'end' if event.done == event.total else 'start'}"] = now()

    t0 = now()
    result = embed_cluster(groups, options, progress=progress, embedder=embedder)
    t1 = now()
    with tempfile.TemporaryDirectory() as tmp:
        write_outputs(result, Path(tmp), plot=True, seed=args.seed)
    t2 = now()
    stages = {
        "lookup": span(t0, marks["k-means start"]),
        "k-means": span(marks["k-means start"], marks["k-means end"]),
        "t-SNE": span(marks["t-SNE start"], marks["t-SNE end"]),
        "metrics": span(marks["t-SNE end"], t1),
        "outputs": span(t1, t2),
    }
    wall, cpu = span(t0, t2)
    print("stages (wall / CPU): " + ", ".join(f"{k} {w:.1f} / {c:.1f} s" for k, (w, c) in stages.items()), flush=True)
    for g in result.metrics["groups"]:
        print("  " + g["summary"])
    tsne_wall = stages["t-SNE"][0]
    print(
        f"embed-cluster analysis (k-means + t-SNE ({result.metrics['settings']['tsne']}) + metrics + outputs) on {args.posts:,} posts: "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU, ratio to the 180 s target {wall / 180:.2f} (target < 1; t-SNE {tsne_wall:.1f} s of it); "
        f"load average {os.getloadavg()[0]:.1f}"
    )

if __name__ == "__main__":
    main()
