"""t-SNE to two dimensions: scikit-learn's Barnes-Hut below ``FFT_FROM`` points, openTSNE's
FFT-accelerated interpolation (Linderman et al., 2019) from there on.

Barnes-Hut costs O(n log n) per iteration with a large constant; the FFT gradient costs O(n) and
wins on large samples (bench/cluster.py: 20,000 points). Below the threshold scikit-learn stays,
so that the paper-sized figures (three groups of 1,000 posts) and every small-data result are the
same as before openTSNE came in. Both start from PCA, with the "auto" learning rate (n / 12)
and early exaggeration 12 for 250 iterations; then scikit-learn runs 750 plain iterations and
openTSNE its default 500. openTSNE interpolates the repulsive forces on a grid of
``FFT_INTS_IN_INTERVAL`` units of the map per interval (its default is 1): at 20,000 points 2.5×
faster, its trustworthiness as high as scikit-learn's, its KL divergence 10% above openTSNE's
default (bench/RESULTS.md).
Both are seeded; the same seed gives the same coordinates, on one thread or several.
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
    threads are set by the caller's threadpool limits).
    """
    if tsne_backend(x.shape[0], fft_from) == "opentsne":
        return _opentsne(x, perplexity, seed, threads)
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(x)


def _opentsne(x: np.ndarray, perplexity: float, seed: int, threads: int | None) -> np.ndarray:
    from openTSNE import TSNE

    # Exact/Annoy neighbours are seeded by random_state; the FFT gradient is deterministic for a
    # given thread count, so coordinates repeat for the same seed and threads.
    model = TSNE(
        n_components=2,
        perplexity=perplexity,
        initialization="pca",
        learning_rate="auto",
        negative_gradient_method="fft",
        ints_in_interval=FFT_INTS_IN_INTERVAL,
        n_jobs=-1 if threads is None else threads,
        random_state=seed,
        verbose=False,
    )
    return np.asarray(model.fit(np.ascontiguousarray(x, dtype=np.float64)), dtype=np.float64)
