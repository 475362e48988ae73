"""t-SNE to two dimensions: scikit-learn's Barnes-Hut below ``FFT_FROM`` points, openTSNE's
FFT-accelerated interpolation (Linderman et al., 2019) from there on.

Barnes-Hut costs O(n log n) per iteration with a large constant; the FFT gradient costs O(n) and
wins on large samples (bench/cluster.py: 20,000 points). Below the threshold scikit-learn stays,
so that the paper-sized figures (three groups of 1,000 posts) and every small-data result are the
same as before openTSNE came in. Both start from PCA and use early exaggeration 12 for 250
iterations, each with its own "auto" learning rate: scikit-learn's is max(n / 12 / 4, 50)
throughout (its gradient is 4x openTSNE's), openTSNE's n / 12 during the exaggeration and n
after it. Then scikit-learn runs 750 plain iterations and openTSNE its default 500. openTSNE
interpolates the repulsive forces on a grid of ``FFT_INTS_IN_INTERVAL`` units of the map per
interval (its default is 1): at 20,000 points 2.5x faster, its trustworthiness as high as
scikit-learn's, its KL divergence 10% above openTSNE's default (bench/RESULTS.md).

Both are seeded, and the map does not depend on the thread count: the same seed gives the same
coordinates on one thread or several, on a laptop or a 64-core server. scikit-learn's exact
neighbours and Barnes-Hut gradient sum in a fixed order. openTSNE's gradient does too (each
point's forces are its own sums; the FFT part is serial), but its Annoy neighbour index seeds
each build thread apart, so its trees, the approximate neighbours, the affinities and the map
can follow ``n_jobs`` (1,200 Gaussian points: 19,232 affinities differ between 1 and 2 threads,
and the maps with them). Here the trees are built on one thread and only the queries run in
parallel (``_SerialBuildAnnoy``): the map is openTSNE's own ``n_jobs=1`` map whatever
``threads`` is, at no measurable cost (20,000 points: 0.96x the time of the threaded build).
"""

from __future__ import annotations

import numpy as np

#: From this many points on, t-SNE runs on openTSNE's FFT gradient (see bench/RESULTS.md).
FFT_FROM = 10_000
#: openTSNE's ``ints_in_interval``: the width of one interval of its interpolation grid, in units
#: of the map. The grid, and with it the FFT's part of every iteration, shrinks with the square of it;
#: at 20,000 points, 2 took 17 s against 43 s for openTSNE's default 1, with the trustworthiness
#: of both maps within 0.003 of scikit-learn's (bench/RESULTS.md: their exact KL divergences too).
FFT_INTS_IN_INTERVAL = 2

BACKENDS = ("sklearn", "opentsne")


def tsne_backend(n: int, fft_from: int = FFT_FROM) -> str:
    """The backend for ``n`` points: ``"opentsne"`` from ``fft_from`` points on, else ``"sklearn"``."""
    return "opentsne" if n >= fft_from else "sklearn"


def tsne(x: np.ndarray, perplexity: float, seed: int, fft_from: int = FFT_FROM, threads: int | None = None) -> np.ndarray:
    """Two-dimensional t-SNE coordinates of the rows of ``x`` (n × 2, float64).

    ``threads``: None uses every core; openTSNE is given it as ``n_jobs`` (scikit-learn's
    threads are set by the caller's threadpool limits). It changes the time, not the map.
    """
    if tsne_backend(x.shape[0], fft_from) == "opentsne":
        return _opentsne(x, perplexity, seed, threads)
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)


def _opentsne(x: np.ndarray, perplexity: float, seed: int, threads: int | None) -> np.ndarray:
    from openTSNE import TSNE
    from openTSNE.affinity import MultiscaleMixture

    x = np.ascontiguousarray(x, dtype=np.float64)
    n_jobs = -1 if threads is None else threads
    # What openTSNE's fit computes for one perplexity (k = 3 perplexity neighbours, exact below
    # 1,000 points, Annoy from there on), with an index whose result does not follow n_jobs.
    n = x.shape[0]
    k = min(n - 1, int(3 * min(perplexity, (n - 1) / 3)))
    index = _knn_index(x, k, seed, n_jobs)
    affinities = MultiscaleMixture(perplexities=perplexity, knn_index=index, n_jobs=n_jobs, random_state=seed, verbose=False)
    model = TSNE(
        n_components=2,
        perplexity=perplexity,
        initialization="pca",
        learning_rate="auto",
        negative_gradient_method="fft",
        ints_in_interval=FFT_INTS_IN_INTERVAL,
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    return np.asarray(model.fit(x, affinities=affinities), dtype=np.float64)


def _knn_index(x: np.ndarray, k: int, seed: int, n_jobs: int):
    """openTSNE's ``neighbors="auto"`` choice: exact neighbours below 1,000 points, else Annoy
    (built on one thread, see ``_SerialBuildAnnoy``)."""
    from openTSNE import nearest_neighbors

    if x.shape[0] < 1000:
        return nearest_neighbors.Sklearn(x, k, metric="euclidean", n_jobs=n_jobs, random_state=seed)
    return _serial_build_annoy()(x, k, metric="euclidean", n_jobs=n_jobs, random_state=seed)


def _serial_build_annoy():
    """openTSNE's Annoy index, its trees built on one thread (defined on first use: openTSNE is
    imported only when a t-SNE runs on it).

    Annoy's threaded build gives each thread its own random stream, so the trees, and through
    them the approximate neighbours, change with the thread count. Built on one thread they are
    the trees of ``n_jobs=1``; the queries, each a search of the fixed trees, still run on
    ``n_jobs`` threads. The code is ``openTSNE.nearest_neighbors.Annoy.build`` (1.0) with that one
    change: the same seed, items, 50 trees and queries.
    """
    global _SerialBuildAnnoy
    if _SerialBuildAnnoy is not None:
        return _SerialBuildAnnoy
    from openTSNE.dependencies.annoy import AnnoyIndex
    from openTSNE.nearest_neighbors import Annoy
    from sklearn.utils import check_random_state

    class SerialBuildAnnoy(Annoy):
        def build(self):
            data, k = self.data, self.k
            n = data.shape[0]
            aliases = {"cosine": "angular", "l1": "manhattan", "l2": "euclidean", "taxicab": "manhattan"}
            self.index = AnnoyIndex(data.shape[1], aliases.get(self.metric, self.metric))
            self.index.set_seed(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            for i in range(n):
                self.index.add_item(i, data[i])
            self.index.build(n_jobs=1, **{"n_trees": 50, **(self.knn_kwargs or {})})
            distances = np.zeros((n, k))
            indices = np.zeros((n, k)).astype(int)

            def nearest(i: int) -> None:
                # Annoy returns the query point itself first
                found, dist = self.index.get_nns_by_item(i, k + 1, include_distances=True)
                indices[i], distances[i] = found[1:], dist[1:]

            if self.n_jobs == 1:
                for i in range(n):
                    nearest(i)
            else:
                from joblib import Parallel, delayed

                Parallel(n_jobs=self.n_jobs, require="sharedmem")(delayed(nearest)(i) for i in range(n))
            return indices, distances

    _SerialBuildAnnoy = SerialBuildAnnoy
    return SerialBuildAnnoy


_SerialBuildAnnoy = None
