"""The embedded generator measured and tuned: kept posts, repeats and copies per setting.

The demo's setting (Task 5 sample data, the embedded SmolLM2, 10 posts per call, 5 + 5
examples), ``--n`` posts per setting (default 200: 20 calls; the development machine has two
shared cores). One llama.cpp server serves every setting. Prints one line per setting: posts
kept of those asked, exact and near repeats within the set, copies of training posts (an
example of the call mostly copied, or any training post copied), parse issues, seconds; and the
ratio of posts kept that are neither repeats nor copies against the pre-issue-14 default
(numbered list, temperature 0, repeat penalty 1.2), measured in the same run.

    python bench/generate_tuning.py [--n 200] [--settings list:0:1.2,json:0.7:1.2,...]
    python bench/generate_tuning.py --fill 200 [--settings json:0.7:1.2]   # --fill --dedup drop

With ``--fill N`` each setting runs as ``smm4h generate --n N --fill --dedup drop`` (default
--max-calls) instead: posts kept (which should be N exactly), the calls it needed against the
ceil(N / 10) of a plain run, and the ratio calls needed / plain calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smm4h_cli.generation.backends import _embedded, embedded_server  # noqa: E402
from smm4h_cli.generation.generate import GenerateOptions, generate  # noqa: E402
from smm4h_cli.generation.prompts import builtin_task  # noqa: E402
from smm4h_cli.io import read_records  # noqa: E402
from smm4h_cli.sample import sample_path  # noqa: E402

BASELINE = "list:0:1.2"
SETTINGS = f"{BASELINE},json:0:1.2,json:0.7:1.2,json:1.0:1.2,json:0.7:1.1,json:0.7:1.3"


def measure(setting: str, n: int, train, backend, seed: int) -> dict:
    fmt, temperature, penalty = setting.split(":")
    options = GenerateOptions(
        task=builtin_task(5), n=n, output_format=fmt, temperature=float(temperature), repeat_penalty=float(penalty),
        seed=seed, concurrency=1,
    )
    started = time.monotonic()
    frame, s = generate(options, train, backend=backend)
    d = s.duplicates
    clean = s.posts_kept - s.repeats - s.copies
    return {
        "setting": setting, "kept": s.posts_kept, "exact": d.get("exact", 0), "near": d.get("near", 0),
        "example_copy": d.get("example_copy", 0), "train": d.get("train_exact", 0) + d.get("train_near", 0),
        "clean": clean, "issues": sum(s.parse_issues.values()), "seconds": time.monotonic() - started,
        "tokens": s.completion_tokens,
    }


def measure_fill(setting: str, n: int, train, backend, seed: int) -> dict:
    fmt, temperature, penalty = setting.split(":")
    options = GenerateOptions(
        task=builtin_task(5), n=n, output_format=fmt, temperature=float(temperature), repeat_penalty=float(penalty),
        seed=seed, concurrency=1, fill=True, dedup="drop",
    )
    started = time.monotonic()
    frame, s = generate(options, train, backend=backend)
    return {"setting": setting, "kept": frame.height, "calls": s.calls, "plain_calls": options.calls,
            "max_calls": options.call_limit, "surplus": s.posts_surplus,
            "dropped": s.repeats + s.copies, "issues": sum(s.parse_issues.values()), "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default=SETTINGS, help="comma-separated format:temperature:repeat_penalty")
    parser.add_argument("--fill", type=int, metavar="N", help="measure --fill --dedup drop runs of N posts kept instead")
    args = parser.parse_args()
    settings = args.settings.split(",")
    train = read_records(sample_path(5, "train"), require_label=True)
    if args.fill:
        with embedded_server() as url:
            backend = replace(_embedded(), base_url=url)
            for setting in settings:
                r = measure_fill(setting, args.fill, train, backend, args.seed)
                print(
                    f"generate --fill {r['setting']} (format:temperature:repeat_penalty), n={args.fill}, --dedup drop: kept {r['kept']} "
                    f"({'exactly n' if r['kept'] == args.fill else 'SHORT of n'}) in {r['calls']} calls (a plain run: {r['plain_calls']}; "
                    f"--max-calls {r['max_calls']}): ratio calls needed / plain calls {r['calls'] / r['plain_calls']:.2f}; "
                    f"dropped as repeats or copies {r['dropped']}, parse issues {r['issues']}, surplus left out {r['surplus']}, "
                    f"{r['seconds']:.0f} s",
                    flush=True,
                )
        return
    if BASELINE not in settings:
        settings.insert(0, BASELINE)
    base = None
    with embedded_server() as url:
        backend = replace(_embedded(), base_url=url)
        for setting in settings:
            r = measure(setting, args.n, train, backend, args.seed)
            if setting == BASELINE:
                base = r
            n = args.n
            ratio = f"{r['clean'] / base['clean']:.2f}x" if base and base["clean"] else "n/a"
            print(
                f"generate tuning {r['setting']} (format:temperature:repeat_penalty), n={n}: kept {r['kept']} ({r['kept'] / n:.0%}), "
                f"exact {r['exact']} ({r['exact'] / n:.1%}), near {r['near']} ({r['near'] / n:.1%}), "
                f"example copies {r['example_copy']} ({r['example_copy'] / n:.1%}), train copies {r['train']} ({r['train'] / n:.1%}), "
                f"clean {r['clean']} ({r['clean'] / n:.0%}), parse issues {r['issues']}, {r['tokens']} tokens, {r['seconds']:.0f} s; "
                f"clean vs {BASELINE}: {ratio}",
                flush=True,
            )


if __name__ == "__main__":
    main()
