"""The embedded server's grammar-last sampling against llama-cpp-python's grammar-first.

The demo's requests (Task 5 sample data, the embedded SmolLM2, 10 posts per call as JSON with
the per-post pattern, the embedded defaults: temperature 0.7, repeat penalty 1.2, a 512-token
penalty window), CALLS calls, each answered twice in this process by llama-cpp-python — once
with its own sampler chain (the grammar applied to the whole vocabulary before every token) and
once grammar-last (``smm4h_cli.generation.llama_server.GrammarLastSampler``: the token sampled
without the grammar, kept if the grammar accepts it, else sampled again under the grammar) —
alternating the order. Prints completion tokens per second of both and their ratio, the share of
tokens the grammar refused, and, with ``--temperature 0``, whether greedy decoding gave the very
same answers (it must).

    python bench/grammar_sampling.py [--calls 10] [--temperature 0.7]
"""

from __future__ import annotations

import argparse
import time

from _generation import offline

from smm4h_cli.generation.generate import GenerateOptions, plan_calls
from smm4h_cli.generation.parsing import parse_json_posts
from smm4h_cli.generation.prompts import builtin_task
from smm4h_cli.io import read_records
from smm4h_cli.sample import sample_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=None, help="default: the embedded default (0.7)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    offline()

    from llama_cpp.llama import Llama as LlamaClass

    from smm4h_cli.generation.backends import _embedded
    from smm4h_cli.generation.llama_server import in_process

    llm, first, last = in_process()
    train = read_records(sample_path(5, "train"), require_label=True)
    options = GenerateOptions(task=builtin_task(5), n=10 * args.calls, seed=args.seed, temperature=args.temperature,
                              concurrency=1, dedup="off")
    calls = plan_calls(options, _embedded(), train)
    requests, prompts = [call.spec.request for call in calls], [call.prompt for call in calls]
    seconds = {"first": 0.0, "last": 0.0}
    tokens = {"first": 0, "last": 0}
    answers = {"first": [], "last": []}
    finish = {"first": [], "last": []}
    rejected = 0
    for k, request in enumerate(requests):
        for side in (("first", "last") if k % 2 == 0 else ("last", "first")):
            LlamaClass._init_sampler = first if side == "first" else last
            time.sleep(0.5)  # let the other side's threads go idle
            # the whole prompt evaluated afresh each time: a prompt prefix kept from the call before is
            # re-read a token at a time, whose logits differ in the last bits and can tip a greedy tie
            llm.reset()
            t = time.perf_counter()
            out = llm.create_chat_completion(
                messages=request["messages"], temperature=request["temperature"], max_tokens=request["max_tokens"],
                repeat_penalty=request["extra_body"]["repeat_penalty"], seed=request["seed"],
                response_format=request["response_format"],
            )
            seconds[side] += time.perf_counter() - t
            tokens[side] += out["usage"]["completion_tokens"]
            answers[side].append(out["choices"][0]["message"]["content"])
            finish[side].append(out["choices"][0]["finish_reason"])
            if side == "last":
                rejected += llm._sampler.rejected if hasattr(llm._sampler, "rejected") else 0

    def kept(side: str) -> int:
        """Posts the toolkit's parser keeps from one side's answers (fragments, echoes, short answers counted out)."""
        return sum(len(parse_json_posts(text, 10, finish_reason=why, prompt=prompt).posts)
                   for text, why, prompt in zip(answers[side], finish[side], prompts))

    rate = {side: tokens[side] / seconds[side] for side in seconds}
    temperature = requests[0]["temperature"]
    same = sum(a == b for a, b in zip(answers["first"], answers["last"]))
    print(
        f"grammar sampling: {len(requests)} calls at temperature {temperature}; grammar-first (llama-cpp-python) "
        f"{tokens['first']} tokens in {seconds['first']:.1f} s = {rate['first']:.1f} tokens/s, posts kept {kept('first')}/{10 * len(requests)}; "
        f"grammar-last (smm4h) {tokens['last']} tokens in {seconds['last']:.1f} s = {rate['last']:.1f} tokens/s, "
        f"posts kept {kept('last')}/{10 * len(requests)}, refused by the grammar and sampled again "
        f"{rejected} ({rejected / max(1, tokens['last']):.1%}); ratio grammar-last / grammar-first {rate['last'] / rate['first']:.2f}x; "
        f"identical answers {same}/{len(requests)}" + (" (greedy: must be all)" if temperature == 0 else ""),
        flush=True,
    )


if __name__ == "__main__":
    main()
