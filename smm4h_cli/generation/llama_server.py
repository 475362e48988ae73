"""``python -m smm4h_cli.generation.llama_server ARGS``: llama-cpp-python's OpenAI-compatible
server (same arguments as ``python -m llama_cpp.server``), with llama.cpp's CPU weight
repacking ("extra buffer types") turned off.

Why: on CPUs with AMX, llama.cpp's repacked weight buffers crashed the server with a
segmentation fault while loading the model; llama-cpp-python exposes no switch for it, so the
default model parameters are wrapped to set ``use_extra_bufts = False`` (what llama.cpp's own
``--no-repack`` does). For a 135M-parameter model the speed difference is small.
"""

from __future__ import annotations

import runpy


def _disable_repacking() -> None:
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params

    def default_params():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = default_params


if __name__ == "__main__":
    _disable_repacking()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
