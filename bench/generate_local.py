"""`smm4h generate`'s overhead over llama.cpp itself, on the embedded SmolLM2.

POSTS posts (default 100), ten per call. Each call is made through the toolkit (``generate()``
for that call, through the real llama.cpp server) and with llama-cpp-python in this process on
the identical request, one right after the other, alternating the order. Prints posts/s and
completion tokens/s of both; the ratio of the summed times is the toolkit's overhead (the
server's start, paid once per run, is printed beside it). Target: under 10%. Pairing call by
call matters: a two-core machine's speed drifts 10-15% between runs of a minute, more than the
target.

    python bench/generate_local.py --psytar ../shared/data/psytar [--posts 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time

from _generation import ADR_TASK, DEFAULT_PSYTAR, offline, psytar_train

from smm4h_cli.generation.generate import GenerateOptions, generate, plan_calls


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
    parser.add_argument("--psytar", default=DEFAULT_PSYTAR, help="the PsyTAR folder (train.tsv)")
    parser.add_argument("--posts", type=int, default=100, help="posts asked for per round, ten per call")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the calls, each with its own seeds")
    args = parser.parse_args()
    offline()
    bench_local(psytar_train(args.psytar), args.posts, args.rounds)


if __name__ == "__main__":
    main()
