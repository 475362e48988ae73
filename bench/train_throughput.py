"""Training throughput: tokens per second of `smm4h train` against the machine's compute bound.

Two fixed, length-realistic training sets of about --tokens tokens each (default 40,000):

* ``psytar``: PsyTAR training sentences (label ADR), drawn at random (seeded) until the budget is
  reached: short posts (median about 18 tokens).
* ``tweets``: posts with the length distribution of tweets, built by joining random PsyTAR
  sentences until a target length is reached; the targets follow a gamma distribution with mean
  54 tokens (SMM4H Task 5: 399k tokens over 7,398 posts), clipped to [8, --max-length]. Only
  the lengths are tweet-like; the words are PsyTAR's.

Both are validated on PsyTAR's dev split (612 posts) as `smm4h train` does after every epoch.

In the same run, interleaved with the training runs (A B A B ...), the bf16 and fp32 peak of
``torch.matmul`` on large square matrices with the same torch threads. The compute bound of an
epoch is its useful training FLOPs (the posts' real tokens, no padding) divided by the bf16 peak
(fp32 where training runs in fp32); the share of the bound is bound / measured time.

Training FLOPs per token are derived from the model's config (forward + backward = 3 x forward):
6 x (matmul parameters per encoder layer x layers) per token, plus attention scores and their
weighted sum, 12 x layers x hidden x n per token for a post of n tokens, plus the pooler and the
head once per post. The embeddings are lookups (no matmul FLOPs).

Every arm runs the real `train_seeds` for --epochs epochs. The time is split with the progress
events: ``steps`` (first to last optimizer step) and ``rest`` (evaluation on dev, checkpoint
saving, set-up inside the Trainer). Tokens/s is the training set's real tokens per second of
``steps`` and of the whole epoch.

    python bench/train_throughput.py [--psytar ../shared/data/psytar] [--rounds 2] [--arms default,before,...]
    python bench/train_throughput.py --profile psytar   # a torch.profiler table of 5 training steps
    python bench/train_throughput.py --f1-check         # 10 epochs on all of PsyTAR, seeds 0,1,2: best dev F1 per arm
    python bench/train_throughput.py --ceiling          # the share of the bound the matrix products reach alone; the update against the bandwidth
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from smm4h_cli.training import hf  # noqa: E402
from smm4h_cli.training.train import TrainOptions, train_seeds  # noqa: E402

#: Arms: name -> (TrainOptions overrides, TrainingArguments overrides). "default" is `smm4h train`'s;
#: the arms without overrides undo one part of it (see run_arm). Arms combine with "+";
#: "before" is the default as it was before training.cpu, batches.length_buckets and
#: training.embedding_rows.
ARMS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "eval-grouped": ({}, {}),  # evaluation batches by the Trainer's own length grouping
    "torch-dropout": ({}, {}),  # torch's own dropout and sdpa attention (no training.cpu.install)
    "trainer-grouping": ({}, {}),  # the Trainer's LengthGroupedSampler, not batches.length_buckets
    "dense-embedding": ({}, {}),  # every word-embedding row in the optimizer (no training.embedding_rows)
    "malloc": ({}, {}),  # glibc keeps freed memory during training (mallopt; tried, not kept: see RESULTS)
    "fp32": ({"precision": "fp32"}, {}),
    "adamw-foreach": ({}, {"optim": "adamw_torch"}),
    "compile": ({}, {"torch_compile": True}),
    "batch64": ({"batch_size": 64}, {}),
}
ALIASES = {"before": "torch-dropout+trainer-grouping+dense-embedding"}


def arm_parts(name: str) -> list[str]:
    return ALIASES.get(name, name).split("+")


def load_psytar(psytar: Path, split: str, label: str = "ADR") -> pl.DataFrame:
    sys.path.insert(0, str(ROOT / "bench"))
    from train_psytar import load

    return load(psytar, split, label)


def token_lengths(texts: list[str], max_length: int) -> np.ndarray:
    from transformers import AutoTokenizer

    from smm4h_cli.models import minilm_path
    from smm4h_cli.training import hf

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    enc = hf.encode(tokenizer, texts, max_length)
    return np.array([len(ids) for ids in enc["input_ids"]])


def psytar_set(train: pl.DataFrame, budget: int, max_length: int, seed: int) -> pl.DataFrame:
    shuffled = train.sample(fraction=1.0, shuffle=True, seed=seed)
    lengths = token_lengths(shuffled["text"].to_list(), max_length)
    n = int(np.searchsorted(np.cumsum(lengths), budget)) + 1
    return shuffled.head(n)


def tweet_set(train: pl.DataFrame, budget: int, max_length: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    texts, labels = train["text"].to_list(), train["label"].to_list()
    lengths = token_lengths(texts, max_length) - 2  # without [CLS] and [SEP]
    posts, post_labels, total = [], [], 0
    while total < budget:
        target = int(np.clip(rng.gamma(4.0, 54.0 / 4.0), 8, max_length))
        parts, label, n = [], 0, 2
        while n < target:
            i = int(rng.integers(len(texts)))
            if parts and n + lengths[i] - target > target - n:
                break  # the post is closer to its target without this sentence
            parts.append(texts[i].strip())
            label = max(label, labels[i])
            n += int(lengths[i])
        posts.append(" ".join(parts))
        post_labels.append(label)
        total += min(n, max_length)
    return pl.DataFrame({"id": [f"tw-{i}" for i in range(len(posts))], "text": posts, "label": post_labels})


def padded_tokens(n: np.ndarray, batch_size: int, seed: int, trainer_grouping: bool = False) -> int:
    """Tokens the model computes (posts padded to their batch's longest) in one epoch's batches:
    smm4h's length buckets (the default), or the Trainer's length grouping (the `before` arm)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from smm4h_cli.training.batches import length_buckets

    generator = torch.Generator().manual_seed(seed)
    if trainer_grouping:
        order = get_length_grouped_indices(n.tolist(), batch_size, generator=generator)
    else:
        order = length_buckets(n.tolist(), batch_size, generator=generator)
    return int(sum(n[order[i:i + batch_size]].max() * len(order[i:i + batch_size]) for i in range(0, len(order), batch_size)))


def flops_per_post(config, n: np.ndarray) -> np.ndarray:
    """Training FLOPs (forward + backward) of posts of ``n`` real tokens each."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer_params = 4 * h * h + 2 * h * inter  # Q, K, V, output; the two feed-forward matrices
    dense = 6 * layers * per_layer_params * n
    attention = 12 * layers * h * n * n  # QK^T and softmax x V: 2 x 2 n h forward per token, x 3
    head = 6 * (h * h + h * config.num_labels)  # pooler and classifier, once per post
    return dense + attention + head


def matmul_peak(dtype, threads: int, size: int = 2048, reps: int = 6) -> float:
    """GFLOP/s of the best of ``reps`` square matmuls."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def copy_bandwidth(threads: int, megabytes: int = 512, reps: int = 5) -> float:
    """Bytes per second a copy between two fp32 tensors of ``megabytes`` moves (read and written
    counted), best of ``reps``: the memory bandwidth an optimizer's update is bound by."""
    import torch

    torch.set_num_threads(threads)
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best


def reset_peak_rss() -> None:
    """Start this process's peak resident memory (VmHWM) afresh (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory since ``reset_peak_rss``, in MB (kB / 1024); NaN off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_arm(name: str, data: pl.DataFrame, dev: pl.DataFrame, args, out: Path) -> dict:
    """One training run of ``name`` on ``data``; times split by the progress events."""
    parts = arm_parts(name)
    options_extra = {k: v for part in parts for k, v in ARMS[part][0].items()}
    args_extra = {k: v for part in parts for k, v in ARMS[part][1].items()}
    events: list[tuple[float, float, object]] = []

    def progress(event) -> None:
        events.append((time.perf_counter(), time.process_time(), event))

    import transformers

    real = transformers.TrainingArguments

    def patched(*a, **kw):
        return real(*a, **{**kw, **args_extra})

    transformers.TrainingArguments = patched
    from transformers import Trainer

    trainer_class = hf.trainer_class
    if "eval-grouped" in parts:  # evaluation batches as before: the Trainer's own sampler

        def grouped(class_weights):
            class Grouped(trainer_class(class_weights)):
                def _get_eval_sampler(self, eval_dataset):
                    return Trainer._get_eval_sampler(self, eval_dataset)

            return Grouped

        hf.trainer_class = grouped
    if "trainer-grouping" in parts:
        current = hf.trainer_class

        def trainer_grouping(class_weights):
            class TrainerGrouping(current(class_weights)):
                def _get_train_sampler(self, train_dataset=None):
                    return Trainer._get_train_sampler(self, train_dataset)

            return TrainerGrouping

        hf.trainer_class = trainer_grouping
    from smm4h_cli.training import cpu as cpu_training
    from smm4h_cli.training import embedding_rows

    install, install_rows = cpu_training.install, embedding_rows.install
    if "torch-dropout" in parts:
        cpu_training.install = lambda model: model
    if "dense-embedding" in parts:
        embedding_rows.install = lambda model, rows, weight_decay=0.0: False
    libc = None
    if "malloc" in parts:  # every block from glibc's heap, freed memory kept; put back afterwards
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0), libc.mallopt(-1, 1 << 30)  # M_MMAP_MAX, M_TRIM_THRESHOLD
    try:
        options = TrainOptions(
            out=out, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length, device="cpu",
            threads=args.threads, force=True, **options_extra,
        )
        reset_peak_rss()
        started, cpu0 = time.perf_counter(), time.process_time()
        result = train_seeds(options, [args.seed], data, dev, None, progress=progress)
        peak = peak_rss_mb()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    finally:
        transformers.TrainingArguments = real  # train_one imports it from transformers at each call
        hf.trainer_class = trainer_class
        cpu_training.install, embedding_rows.install = install, install_rows
        if libc is not None:
            libc.mallopt(-4, 65536), libc.mallopt(-3, 32 * 2**20), libc.mallopt(-1, 64 * 2**20), libc.malloc_trim(0)
    steps = [(t, c) for t, c, e in events if not e.milestone and e.done > 0]
    evaluated = [t for t, c, e in events if e.milestone and "val F1" in e.detail]
    run = result.runs[0]
    return {
        "eval_wall": evaluated[0] - steps[-1][0] if evaluated and steps else float("nan"),
        "wall": wall, "cpu": cpu, "train_seconds": run.metrics["train_seconds"],
        "steps_wall": steps[-1][0] - steps[0][0] if len(steps) > 1 else float("nan"),
        "steps_cpu": steps[-1][1] - steps[0][1] if len(steps) > 1 else float("nan"),
        "n_steps": len(steps), "f1": run.best["f1"], "peak_mb": peak,
    }


def training_step(data: pl.DataFrame, args, rows_trained: bool = True):
    """One training step as the Trainer takes it (bf16 autocast, backward, gradient clipping at
    1.0, fused AdamW, ``training.cpu``'s dropout, and unless ``rows_trained`` is False the
    word-embedding rows of the set's tokens) on a batch of the set's median padded shape, as a
    function, and that shape."""
    import torch

    from smm4h_cli.models import minilm_path
    from smm4h_cli.training import cpu as cpu_training
    from smm4h_cli.training import embedding_rows

    torch.set_num_threads(args.threads)
    model, tokenizer = hf.load_classifier(str(minilm_path()), new_head_seed=args.seed)
    cpu_training.install(model)
    rows = embedding_rows.token_rows({"input_ids": ids} for ids in hf.encode(tokenizer, data["text"].to_list(), args.max_length)["input_ids"])
    if rows_trained:
        embedding_rows.install(model, rows)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5, fused=True)
    n = token_lengths(data["text"].to_list(), args.max_length)
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = np.array(get_length_grouped_indices(n.tolist(), args.batch_size, generator=torch.Generator().manual_seed(args.seed)))
    width = int(np.median([n[order[i:i + args.batch_size]].max() for i in range(0, len(n), args.batch_size)]))
    generator = torch.Generator().manual_seed(args.seed)
    ids = rows[torch.randint(len(rows), (args.batch_size, width), generator=generator)]  # the set's own tokens
    labels = torch.randint(0, 2, (args.batch_size,), generator=generator)

    def step(update_seconds: list[float] | None = None) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        start = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if update_seconds is not None:  # the update alone: clipping, fused AdamW, dropping the gradients
            update_seconds.append(time.perf_counter() - start)

    step.trained_parameters = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    return step, width


def profile(data: pl.DataFrame, args, n_steps: int = 5) -> None:
    """A torch.profiler table of ``n_steps`` training steps (``training_step``)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    step, width = training_step(data, args)
    for _ in range(3):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n_steps):
            step()
    print(f"profile: {n_steps} steps of {args.batch_size} x {width} tokens", flush=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), flush=True)


def paired(sets: dict[str, pl.DataFrame], args, n_pairs: int = 40) -> None:
    """The word-embedding rows against the dense embedding, step by step: two models in one
    process take their steps in turn (dense, rows, rows, dense, ...) on the same batch, so that the
    machine's drift (which moves whole runs by 15% here) falls on both alike. Median step times
    and the median of the paired differences."""
    import time

    for name, data in sets.items():
        dense, width = training_step(data, args, rows_trained=False)
        rows, _ = training_step(data, args)
        for _ in range(3):
            dense(), rows()
        times: dict[str, list[float]] = {"dense": [], "rows": []}
        for i in range(n_pairs):  # dense first in even pairs, rows first in odd ones
            for arm, step in (("dense", dense), ("rows", rows))[::1 if i % 2 == 0 else -1]:
                start = time.perf_counter()
                step()
                times[arm].append(time.perf_counter() - start)
        diff = np.array(times["dense"]) - np.array(times["rows"])
        d, r = np.median(times["dense"]) * 1e3, np.median(times["rows"]) * 1e3
        print(f"paired {name}: {n_pairs} steps each of {args.batch_size} x {width} tokens; dense embedding {d:.1f} ms, "
              f"embedding rows {r:.1f} ms per step (median) = {d / r:.2f}x; paired difference median {np.median(diff) * 1e3:.1f} ms, "
              f"rows faster in {(diff > 0).sum()}/{n_pairs} pairs; load {os.getloadavg()[0]:.1f}", flush=True)


def linears_alone(config, tokens: int, threads: int) -> tuple[Callable[[], None], float]:
    """The matrix products of the encoder's linear layers in one training step of ``tokens``
    tokens, alone, in bf16 as autocast runs them: for every layer's Q, K, V, attention output and
    two feed-forward matrices the forward product, the gradient of the input and the gradient of
    the weight. A function taking them once, and their FLOPs (6 x matmul parameters x tokens)."""
    import torch

    torch.set_num_threads(threads)
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    shapes = [(h, h)] * 4 + [(h, inter), (inter, h)]  # (in, out)
    generator = torch.Generator().manual_seed(0)
    x = {k: torch.randn(tokens, k, generator=generator).bfloat16() for k in (h, inter)}
    grad = {k: torch.randn(tokens, k, generator=generator).bfloat16() for k in (h, inter)}
    weight = {s: torch.randn(s[1], s[0], generator=generator).bfloat16() for s in set(shapes)}

    def products() -> None:
        for _ in range(layers):
            for shape in shapes:
                torch.nn.functional.linear(x[shape[0]], weight[shape])  # forward
                grad[shape[1]] @ weight[shape]  # gradient of the input
                grad[shape[1]].t() @ x[shape[0]]  # gradient of the weight

    return products, 6.0 * layers * sum(a * b for a, b in shapes) * tokens


def ceiling(sets: dict[str, pl.DataFrame], config, args, reps: int = 12) -> None:
    """How near the bound a step could come: the linear layers' matrix products of one step of the
    set's median shape alone (``linears_alone``), the whole step (``training_step``) and the bf16
    peak, interleaved. FLOPs of the step as in ``flops_per_post`` (real and padding tokens alike:
    one batch of equal rows)."""
    import torch

    for name, data in sets.items():
        step, width = training_step(data, args)
        tokens = args.batch_size * width
        products, linear_flops = linears_alone(config, tokens, args.threads)
        step_flops = float(flops_per_post(config, np.full(args.batch_size, width)).sum())
        for _ in range(3):
            step(), products()
        times: dict[str, list[float]] = {"step": [], "linears": [], "peak": [], "update": []}
        for _ in range(reps):
            times["peak"].append(matmul_peak(torch.bfloat16, args.threads))
            for key, run in (("step", lambda: step(times["update"])), ("linears", products)):
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
        peak = statistics.median(times["peak"]) * 1e9
        step_s, linear_s = statistics.median(times["step"]), statistics.median(times["linears"])
        update_s, trained = statistics.median(times["update"]), step.trained_parameters
        # fused AdamW reads parameter, gradient and two moments and writes three of them back
        # (28 bytes per fp32 parameter); clipping reads the gradients and scales them (8 more)
        bandwidth = copy_bandwidth(args.threads)
        update_floor = 36 * trained / bandwidth
        half = step_flops / peak / 0.5  # a step at 50% of the bound
        print(f"ceiling {name}: steps of {args.batch_size} x {width} = {tokens} tokens, {step_flops / 1e9:.1f} GFLOP "
              f"(the linear layers' {linear_flops / 1e9:.1f}); bf16 peak median {peak / 1e9:.0f} GFLOP/s "
              f"(range {min(times['peak']):.0f}-{max(times['peak']):.0f}) -> bound {step_flops / peak * 1e3:.1f} ms per step; "
              f"whole step {step_s * 1e3:.1f} ms = {step_flops / peak / step_s:.1%} of the bound; "
              f"the linear layers' products alone {linear_s * 1e3:.1f} ms = {linear_flops / linear_s / 1e9:.0f} GFLOP/s = "
              f"{linear_flops / peak / linear_s:.1%} of the peak; at 50% of the bound a step has {half * 1e3:.1f} ms, "
              f"{half * 1e3 - linear_s * 1e3:.1f} ms of it for everything but those products (today {(step_s - linear_s) * 1e3:.1f} ms, "
              f"of which the update alone - clipping, fused AdamW over {trained / 1e6:.1f}M parameters - {update_s * 1e3:.1f} ms, against "
              f"{update_floor * 1e3:.1f} ms for its 36 bytes per parameter at the copy bandwidth of {bandwidth / 1e9:.1f} GB/s); "
              f"load {os.getloadavg()[0]:.1f}", flush=True)


def f1_check(train: pl.DataFrame, dev: pl.DataFrame, arms: list[str], seeds: list[int], args) -> None:
    """The issue's check: the same validation F1 (within 0.01) on PsyTAR at 10 epochs. Every arm
    trains on the whole train split with every seed (A B per seed); the best dev F1 of each run,
    the mean per arm, and the mean difference from the first arm."""
    import torch

    print(f"F1 check: {train.height:,} PsyTAR train posts, {dev.height} dev posts, {args.epochs} epochs, seeds {seeds}, "
          f"{args.threads} threads, torch {torch.__version__}; load average {os.getloadavg()}", flush=True)
    f1: dict[str, list[float]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            args.seed = seed
            for arm in arms:
                res = run_arm(arm, train, dev, args, Path(tmp) / f"f1-{arm}-{seed}")
                f1[arm].append(res["f1"])
                print(f"seed {seed} {arm:14}: best dev F1 {res['f1']:.4f}; {res['train_seconds']:.0f} s ({res['train_seconds'] / args.epochs:.1f} s per epoch), "
                      f"steps {res['steps_wall']:.0f} s; peak RSS {res['peak_mb']:.0f} MB; load {os.getloadavg()[0]:.1f}", flush=True)
    first = arms[0]
    for arm in arms:
        diff = statistics.mean(a - b for a, b in zip(f1[arm], f1[first]))
        print(f"{arm:14}: best dev F1 mean {statistics.mean(f1[arm]):.4f} ({', '.join(f'{x:.4f}' for x in f1[arm])})"
              + ("" if arm == first else f"; mean difference from {first} {diff:+.4f} (target within 0.01)"), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--psytar", type=Path, default=ROOT.parent / "shared" / "data" / "psytar")
    parser.add_argument("--tokens", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 1; 10 with --f1-check)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="A B A B ... rounds of every arm on every set")
    parser.add_argument("--arms", default="default,before", help=f"comma-separated, of {', '.join([*ARMS, *ALIASES])}; parts combine with '+'")
    parser.add_argument("--sets", default="tweets,psytar")
    parser.add_argument("--profile", choices=("tweets", "psytar"), help="only a torch.profiler table of 5 training steps on this set")
    parser.add_argument("--paired", action="store_true", help="only step times of the word-embedding rows against the dense embedding, "
                        "in turn in one process, on every set")
    parser.add_argument("--ceiling", action="store_true", help="only the share of the bound the linear layers' matrix products "
                        "of a step reach alone, and the time of the step's update against the memory bandwidth, "
                        "against the whole step's, on every set")
    parser.add_argument("--f1-check", action="store_true", help="instead: every arm on the whole PsyTAR train split for --epochs (10 here unless given) with --seeds; best dev F1 per arm and seed")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of --f1-check")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if any(part not in ARMS for part in arm_parts(a))]
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; known: {', '.join([*ARMS, *ALIASES])}, combined with '+'")

    from transformers import AutoConfig

    from smm4h_cli.models import minilm_path

    config = AutoConfig.from_pretrained(str(minilm_path()))
    config.num_labels = 2
    train = load_psytar(args.psytar, "train")
    dev = load_psytar(args.psytar, "dev")
    if args.f1_check:
        args.epochs = args.epochs or 10
        f1_check(train, dev, arms, [int(x) for x in args.seeds.split(",")], args)
        return
    args.epochs = args.epochs or 1
    sets = {
        "psytar": psytar_set(train, args.tokens, args.max_length, args.seed),
        "tweets": tweet_set(train, args.tokens, args.max_length, args.seed),
    }
    sets = {k: sets[k] for k in args.sets.split(",")}
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    non_embedding = layers * (4 * h * h + 2 * h * inter)
    print(f"MiniLM config: {layers} layers, hidden {h}, intermediate {inter}; matmul parameters {non_embedding / 1e6:.2f}M "
          f"-> 6 x params = {6 * non_embedding / 1e6:.1f} MFLOP per token + attention 12 x {layers} x {h} x n per token")
    stats = {}
    for name, frame in sets.items():
        n = token_lengths(frame["text"].to_list(), args.max_length)
        fl = flops_per_post(config, n)
        stats[name] = {"tokens": int(n.sum()), "flops": float(fl.sum())}
        padded = padded_tokens(n, args.batch_size, args.seed)
        padded_trainer = padded_tokens(n, args.batch_size, args.seed, trainer_grouping=True)
        print(f"set {name}: {frame.height:,} posts, {n.sum():,} tokens (median {np.median(n):.0f}, mean {n.mean():.1f}, "
              f"p99 {np.percentile(n, 99):.0f}), {fl.sum() / n.sum() / 1e6:.1f} MFLOP per token, "
              f"{len(n) / args.batch_size:.0f} steps of {args.batch_size} = {n.sum() / np.ceil(len(n) / args.batch_size):.0f} tokens per step, "
              f"padding {padded / n.sum() - 1:.1%} in length buckets ({padded_trainer / n.sum() - 1:.1%} in the Trainer's grouping), "
              f"{train['label'].mean():.0%}/{frame['label'].mean():.0%} positive", flush=True)
    if args.profile:
        profile(sets[args.profile], args)
        return
    if args.paired:
        paired(sets, args)
        return
    if args.ceiling:
        ceiling(sets, config, args)
        return

    import torch

    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads; load average {os.getloadavg()}", flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    peaks: dict[str, list[float]] = {"bf16": [], "fp32": []}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for set_name, frame in sets.items():
                for arm in arms:
                    peaks["bf16"].append(matmul_peak(torch.bfloat16, args.threads))
                    peaks["fp32"].append(matmul_peak(torch.float32, args.threads))
                    res = run_arm(arm, frame, dev, args, Path(tmp) / f"{set_name}-{arm}-{r}")
                    loads.append(os.getloadavg()[0])
                    results.setdefault((set_name, arm), []).append(res)
                    tok = stats[set_name]["tokens"] * args.epochs
                    print(f"round {r + 1} {set_name:6} {arm:14}: {res['train_seconds']:6.1f} s train_seconds, steps {res['steps_wall']:6.1f} s wall "
                          f"({res['steps_cpu']:6.1f} s CPU) for {res['n_steps']} steps, evaluation {res['eval_wall']:5.1f} s -> {tok / res['steps_wall']:6.0f} tokens/s in steps, "
                          f"{tok / res['train_seconds']:6.0f} tokens/s overall; dev F1 {res['f1']:.3f}; peak RSS {res['peak_mb']:.0f} MB; "
                          f"peak bf16 {peaks['bf16'][-1]:.0f} fp32 {peaks['fp32'][-1]:.0f} GFLOP/s; load {loads[-1]:.1f}", flush=True)
    bf16, fp32 = statistics.median(peaks["bf16"]), statistics.median(peaks["fp32"])
    print(f"\nmatmul peak (2048 x 2048, {args.threads} threads), median of {len(peaks['bf16'])}: bf16 {bf16:.0f} GFLOP/s, fp32 {fp32:.0f} GFLOP/s; "
          f"load average during the run {min(loads):.1f}-{max(loads):.1f}")
    for (set_name, arm), runs in results.items():
        peak = fp32 if "fp32" in arm_parts(arm) else bf16
        bound = stats[set_name]["flops"] * args.epochs / (peak * 1e9)
        tok = stats[set_name]["tokens"] * args.epochs
        steps = statistics.median(r["steps_wall"] for r in runs)
        total = statistics.median(r["train_seconds"] for r in runs)
        cpu = statistics.median(r["steps_cpu"] for r in runs) / args.threads
        ev = statistics.median(r["eval_wall"] for r in runs)
        f1s = ", ".join(f"{r['f1']:.3f}" for r in runs)
        print(f"{set_name:6} {arm:14}: bound {bound:5.1f} s; steps {steps:6.1f} s = {tok / steps:5.0f} tokens/s = {bound / steps:5.1%} of the bound; "
              f"steps by CPU time / threads {cpu:6.1f} s = {bound / cpu:5.1%}; evaluation {ev:5.1f} s; whole epoch(s) {total:6.1f} s = {tok / total:5.0f} tokens/s = {bound / total:5.1%} of the bound (target >= 50%); "
              f"dev F1 {f1s}; peak RSS {max(r['peak_mb'] for r in runs):.0f} MB", flush=True)


if __name__ == "__main__":
    main()
