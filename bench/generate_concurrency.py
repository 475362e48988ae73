"""`smm4h generate`'s engine under concurrency.

A loopback OpenAI-compatible server (its own process, aiohttp) answers every request after a
fixed delay (200 ms); CALLS calls (default 200) go through ``generate()`` with --concurrency 1
and 16. Prints both wall times and the ratio. Target: at least 12x at 16.

    python bench/generate_concurrency.py --psytar ../shared/data/psytar [--calls 200] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time

from _generation import ADR_TASK, DEFAULT_PSYTAR, offline, psytar_train

from smm4h_cli.generation.backends import resolve_backend
from smm4h_cli.generation.generate import GenerateOptions, generate


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--psytar", default=DEFAULT_PSYTAR, help="the PsyTAR folder (train.tsv)")
    parser.add_argument("--calls", type=int, default=200, help="calls made at each concurrency")
    parser.add_argument("--delay", type=float, default=0.2, help="the loopback server's answer delay, seconds")
    args = parser.parse_args()
    offline()
    bench_concurrency(psytar_train(args.psytar), args.calls, args.delay)


if __name__ == "__main__":
    main()
