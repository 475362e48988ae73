"""``python -m smm4h_cli.generation.llama_server ARGS``: llama-cpp-python's OpenAI-compatible
server (same arguments as ``python -m llama_cpp.server``), with two changes to how it runs
llama.cpp.

1. llama.cpp's CPU weight repacking ("extra buffer types") is off. On CPUs with AMX the
   repacked weight buffers crashed the server with a segmentation fault while loading the
   model; llama-cpp-python exposes no switch for it, so the default model parameters are wrapped
   to set ``use_extra_bufts = False`` (what llama.cpp's own ``--no-repack`` does). For a
   135M-parameter model the speed difference is small.
2. A grammar (a JSON schema's ``response_format``) is checked *after* sampling, as llama.cpp's
   own server and CLI do (``common_sampler``): the token the sampler chain picks is kept when
   the grammar accepts it; only when it does not is the grammar applied to the whole vocabulary
   and the token sampled again. llama-cpp-python puts the grammar first in the chain, so every
   token checked all 49,152 of SmolLM2's vocabulary against the grammar; grammar-last makes
   1.55x the tokens per second (bench/grammar_sampling.py). Greedy decoding picks the very
   same tokens either way (the most likely token the grammar accepts); with temperature > 0 the
   draw differs from llama-cpp-python's, as it does between llama-cpp-python and llama.cpp.
   (Mirostat, which the toolkit does not use, updates its state in each pass over the
   candidates, so a refused token updates it twice — as in llama.cpp's own sampler.)
"""

from __future__ import annotations

import ctypes
import math
import runpy

import numpy as np

#: llama.cpp's ``llama_token_data`` (id, logit, p) as a numpy record.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


def _disable_repacking() -> None:
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def default_params():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = default_params


class GrammarLastSampler:
    """A sampler chain without the grammar, and the grammar checked on the token it picks.

    Stands where llama-cpp-python keeps its ``LlamaSampler`` (``Llama._sampler``), which it only
    ever calls as ``sample(ctx, idx)``. Both the chain (its repeat penalty's history) and the
    grammar accept the token finally chosen, never a rejected one.
    """

    def __init__(self, chain, grammar, n_vocab: int) -> None:
        import llama_cpp.llama_cpp as lib

        self._lib = lib
        self.chain = chain  # llama_cpp._internals.LlamaSampler: penalties, top-k ... dist (or greedy)
        self.grammar = grammar  # a llama_sampler pointer of its own, freed with this object
        self.n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._candidates = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._one = lib.llama_token_data(0, 0.0, 0.0)
        self.rejected = 0  # tokens the grammar refused, sampled again (for the benchmark)

    def _all(self, ctx, idx: int):
        """Every token with its logit at ``idx``, as a fresh ``llama_token_data_array``."""
        lib = self._lib
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n_vocab,))
        self._candidates["id"] = self._ids
        self._candidates["logit"] = logits
        self._candidates["p"] = 0.0
        data = self._candidates.ctypes.data_as(lib.llama_token_data_p)
        return lib.llama_token_data_array(data, self.n_vocab, -1, False)

    def _accepts(self, token: int) -> bool:
        lib = self._lib
        self._one.id, self._one.logit, self._one.p = token, 1.0, 0.0
        single = lib.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(single))
        return not math.isinf(single.data[0].logit)

    @staticmethod
    def _selected(candidates) -> int:
        # every chain _init_sampler builds ends in a sampler that selects (dist, greedy, mirostat)
        if not 0 <= candidates.selected < candidates.size:
            raise RuntimeError(f"the sampler chain selected no token (index {candidates.selected} of {candidates.size})")
        return int(candidates.data[candidates.selected].id)

    def sample(self, ctx, idx: int = -1) -> int:
        lib = self._lib
        candidates = self._all(ctx, idx)
        lib.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates))
        token = self._selected(candidates)
        if not self._accepts(token):
            self.rejected += 1
            candidates = self._all(ctx, idx)
            lib.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
            lib.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates))
            token = self._selected(candidates)
        lib.llama_sampler_accept(self.grammar, token)
        lib.llama_sampler_accept(self.chain.sampler, token)
        return token

    def close(self) -> None:
        if getattr(self, "grammar", None) is not None:
            self._lib.llama_sampler_free(self.grammar)
            self.grammar = None
        if getattr(self, "chain", None) is not None:
            self.chain.close()

    def __del__(self) -> None:
        self.close()


def _check_grammar_last() -> None:
    """Replace ``Llama._init_sampler`` so that a request with a grammar samples grammar-last."""
    import llama_cpp.llama_cpp as lib
    from llama_cpp.llama import Llama

    original = Llama._init_sampler
    if getattr(original, "grammar_last", False):
        return

    def init_sampler(self, *args, grammar=None, **kwargs):
        chain = original(self, *args, grammar=None, **kwargs)
        if grammar is None:
            return chain
        pointer = lib.llama_sampler_init_grammar(
            self._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        if not pointer:
            chain.close()
            raise ValueError("llama.cpp could not build a sampler from the request's grammar")
        return GrammarLastSampler(chain, pointer, self._n_vocab)

    init_sampler.grammar_last = True
    Llama._init_sampler = init_sampler


def in_process(n_ctx: int = 4096, threads: int | None = None):
    """SmolLM2 in this process, loaded as the embedded server loads it, and llama-cpp-python's two
    ways to build a sampler: ``(llm, grammar_first, grammar_last)``. ``Llama._init_sampler`` is left
    grammar-first; assign either to choose (for the benchmark and the tests that compare them)."""
    import os

    from llama_cpp.llama import Llama

    from smm4h_cli.generation.backends import EMBEDDED_PENALTY_WINDOW
    from smm4h_cli.models import smollm2_path

    _disable_repacking()
    first = Llama._init_sampler
    if getattr(first, "grammar_last", False):
        raise RuntimeError("Llama._init_sampler is already grammar-last: nothing to compare it with")
    _check_grammar_last()
    last = Llama._init_sampler
    Llama._init_sampler = first
    threads = threads or max(1, min(4, os.cpu_count() or 1))  # what embedded_server() gives the server
    llm = Llama(model_path=str(smollm2_path()), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                last_n_tokens_size=EMBEDDED_PENALTY_WINDOW, logits_all=False, verbose=False)
    return llm, first, last


if __name__ == "__main__":
    _disable_repacking()
    _check_grammar_last()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
