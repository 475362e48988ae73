"""Generation engine: concurrency speed-up, and the toolkit's overhead over llama.cpp itself.

1. concurrency: a loopback OpenAI-compatible server answers every request after a fixed delay
   (200 ms); CALLS calls (default 200) through ``generate()`` with --concurrency 1 and 16.
   Prints both wall times and the ratio. Target: at least 12x at 16.
2. local: POSTS posts (default 100; 30 with --quick), ten per call, from the embedded SmolLM2.
   Each call is made through the toolkit (``generate()`` for that call, through the real
   llama.cpp server) and with llama-cpp-python in this process on the identical request, one
   right after the other, alternating the order. Prints posts/s and completion tokens/s of both;
   the ratio of the summed times is the toolkit's overhead (the server's start, paid once per run,
   is printed beside it). Target: under 10%. Pairing call by call matters here: this machine's
   speed drifts 10-15% between runs of a minute, more than the target.

The few-shot examples come from PsyTAR (real sentences from reviews of psychiatric drugs),
label ADR, posed as a user's own task (``--definitions``), so the prompts are real-world ones.

    python bench/generate.py --psytar ../shared/data/psytar [--only concurrency|local] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import multiprocessing
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from smm4h_cli.generation.backends import resolve_backend  # noqa: E402
from smm4h_cli.generation.generate import GenerateOptions, generate, plan_calls  # noqa: E402
from smm4h_cli.generation.prompts import TaskDefinition  # noqa: E402

ADR_TASK = TaskDefinition(
    name="psytar-adr",
    definition=(
        "The following sentences come from patients' reviews of psychiatric medications. Label 1: the sentence "
        "reports an adverse drug reaction, a harmful or unpleasant effect the writer attributes to the drug. "
        "Label 0: the sentence does not (it reports effectiveness, the reason for taking the drug, or other things)."
    ),
    post_kind="sentences",
)


def psytar_train(folder: str) -> pl.DataFrame:
    """PsyTAR's training sentences with the ADR label (its few empty sentences left out)."""
    frame = pl.read_csv(Path(folder) / "train.tsv", separator="\t", quote_char=None, infer_schema_length=0)
    frame = frame.filter(pl.col("sentences").str.strip_chars().str.len_chars() > 0)
    return frame.select(
        pl.format("psytar-{}", pl.int_range(pl.len()) + 1).alias("id"),
        pl.col("sentences").alias("text"),
        pl.col("ADR").cast(pl.Int64).alias("label"),
    )


class DelayServer:
    """Answers every chat request after ``delay`` seconds with a clean numbered list."""

    def __init__(self, delay: float):
        self.delay = delay

    async def _models(self, request):
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": "delay", "object": "model", "created": 0, "owned_by": "bench"}]})

    async def _chat(self, request):
        from aiohttp import web

        body = await request.json()
        await asyncio.sleep(self.delay)
        seed = body.get("seed", 0)
        content = "\n".join(f"{i}. bench post {seed}-{i}: the pills gave me headaches number {seed * 10 + i}" for i in range(1, 11))
        return web.json_response({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 500, "completion_tokens": 300, "total_tokens": 800},
        })

    def _serve(self, ports) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        ports.put(site._server.sockets[0].getsockname()[1])
        loop.run_forever()

    def __enter__(self) -> str:
        """Serve from a separate process, so the server does not share the measured client's GIL."""
        ports = multiprocessing.Queue()
        self.process = multiprocessing.Process(target=self._serve, args=(ports,), daemon=True)
        self.process.start()
        return f"http://127.0.0.1:{ports.get(timeout=30)}/v1"

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.join(10)


def bench_concurrency(train, calls: int, delay: float) -> None:
    with DelayServer(delay) as url:
        backend = resolve_backend(None, url)
        times = {}
        for c in (1, 16):
            # dedup off: this measures the engine (dedup is a fixed cost after the calls)
            options = GenerateOptions(task=ADR_TASK, n=calls * 10, base_url=url, concurrency=c, dedup="off")
            start = time.perf_counter()
            frame, summary = generate(options, train, backend=backend)
            times[c] = time.perf_counter() - start
            assert summary.calls == calls and summary.calls_failed == 0 and frame.height == calls * 10
    print(
        f"generate concurrency: {calls} calls, {delay * 1000:.0f} ms each: --concurrency 1 {times[1]:.2f} s, "
        f"--concurrency 16 {times[16]:.2f} s, speed-up {times[1] / times[16]:.1f}x (target >= 12x)",
        flush=True,
    )


def bench_local(train, posts: int, rounds: int) -> None:
    """The toolkit against llama.cpp itself, call by call.

    The machine's speed drifts by 10-15% from one minute to the next (two cores, shared), which
    swamps a 10% target when two ~45 s runs are compared. So each call is measured twice in a
    row, a few seconds apart: once through the toolkit (``generate()`` for that one call: plan,
    request through the openai SDK to the llama.cpp server, parsing, records) and once with
    llama-cpp-python in this process on the identical request. The order alternates and both
    sides rest between calls, so llama.cpp's spinning threads on one side do not slow the other.
    The server's start is a fixed cost per run, timed and reported on its own.
    """
    from dataclasses import replace

    from llama_cpp import Llama

    from smm4h_cli.generation.backends import _embedded, embedded_server
    from smm4h_cli.generation.llama_server import _disable_repacking
    from smm4h_cli.models import smollm2_path

    calls = -(-posts // 10)
    _disable_repacking()
    threads = max(1, min(4, os.cpu_count() or 1))  # what embedded_server() gives the server
    load = time.perf_counter()
    llm = Llama(model_path=str(smollm2_path()), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    load = time.perf_counter() - load
    ours, direct, kept, ours_tokens, direct_tokens = [], [], 0, 0, 0
    start = time.perf_counter()
    with embedded_server() as url:
        start = time.perf_counter() - start
        backend = replace(_embedded(), base_url=url)
        for r in range(rounds):
            for k in range(calls):
                # one call of a run seeded k: a real plan's call 0, with its own few-shot draw
                options = GenerateOptions(task=ADR_TASK, n=10, seed=1000 * r + k, concurrency=1, dedup="off")
                request = plan_calls(options, backend, train)[0].spec.request
                for side in (("toolkit", "direct") if (r * calls + k) % 2 == 0 else ("direct", "toolkit")):
                    time.sleep(0.5)  # let the other side's threads go idle
                    t = time.perf_counter()
                    if side == "toolkit":
                        frame, summary = generate(options, train, backend=backend)
                        ours.append(time.perf_counter() - t)
                        kept += summary.posts_kept
                        ours_tokens += summary.completion_tokens
                    else:
                        out = llm.create_chat_completion(
                            messages=request["messages"], temperature=request["temperature"],
                            max_tokens=request["max_tokens"], repeat_penalty=request["extra_body"]["repeat_penalty"],
                            seed=request["seed"],
                        )
                        direct.append(time.perf_counter() - t)
                        direct_tokens += out["usage"]["completion_tokens"]
    total_ours, total_direct = sum(ours), sum(direct)
    ratios = sorted(o / d for o, d in zip(ours, direct))
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    print(
        f"generate local: {rounds} x {calls} calls ({calls * rounds * 10} posts asked, {kept} kept), each through the toolkit "
        f"and through llama-cpp-python in-process, alternating. Toolkit (generate() via the llama.cpp server): {total_ours:.1f} s, "
        f"{kept / total_ours:.2f} posts/s, {ours_tokens / total_ours:.1f} tokens/s ({ours_tokens} tokens); plus {start:.1f} s "
        f"server start once per run. llama.cpp direct: {total_direct:.1f} s, {direct_tokens / total_direct:.1f} tokens/s "
        f"({direct_tokens} tokens; model load {load:.1f} s, not counted). Overhead {100 * (total_ours / total_direct - 1):+.1f}% "
        f"(median call {100 * (median - 1):+.1f}%; with the server start {100 * ((total_ours + start) / (total_direct + load) - 1):+.1f}%; "
        f"target < 10%). Same tokens both ways: {ours_tokens == direct_tokens}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--psytar", default=str(ROOT.parent / "shared" / "data" / "psytar"), help="the PsyTAR folder (train.tsv)")
    parser.add_argument("--only", choices=("concurrency", "local"))
    parser.add_argument("--calls", type=int, default=200, help="calls in the concurrency benchmark")
    parser.add_argument("--delay", type=float, default=0.2, help="the loopback server's answer delay, seconds")
    parser.add_argument("--posts", type=int, default=None, help="posts in the local benchmark (default 100; 30 with --quick)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the local benchmark's calls")
    parser.add_argument("--quick", action="store_true", help="a smaller local benchmark for a shared machine")
    args = parser.parse_args()
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ.pop("OPENAI_BASE_URL", None)
    train = psytar_train(args.psytar)
    if args.only in (None, "concurrency"):
        bench_concurrency(train, args.calls, args.delay)
    if args.only in (None, "local"):
        bench_local(train, args.posts or (30 if args.quick else 100), args.rounds)


if __name__ == "__main__":
    main()
