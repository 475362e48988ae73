#!/usr/bin/env bash
# The GPU check of issue 15: on a machine with CUDA,
#   1. train the embedded MiniLM on PsyTAR (label ADR) for 2 epochs in bf16   (smm4h train)
#   2. embed 20,000 posts in bf16 autocast                                   (SentenceEmbedder)
#   3. predict 20,000 posts with the trained model                           (smm4h predict)
#   4. t-SNE of the 20,000 vectors (openTSNE's FFT gradient)                  (projection.tsne)
# and print each figure with the GPU's name. The 20,000 posts are PsyTAR's sentences repeated
# with a numbered suffix (so every post is a distinct text).
#
# Without CUDA it runs the same four steps on the CPU on a tiny slice (300 posts, 1 epoch),
# so that the script cannot rot (tests/test_bench_gpu.py runs that). Without PsyTAR (or with
# --tiny) it generates a tiny labelled data set itself.
#
#   bench/gpu.sh [--psytar DIR] [--posts N] [--epochs E] [--work DIR] [--tiny] [--cpu]
#
# PYTHON names the interpreter (default: python). Results go to stdout, one line per figure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
PYTHON="${PYTHON:-python}"
psytar="$(dirname "$root")/shared/data/psytar"
posts="" epochs="" work="" tiny=0 force_cpu=0
while [ $# -gt 0 ]; do
    case "$1" in
        --psytar) psytar="$2"; shift 2 ;;
        --posts) posts="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        --work) work="$2"; shift 2 ;;
        --tiny) tiny=1; shift ;;
        --cpu) force_cpu=1; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
cuda=0
if [ "$force_cpu" = 0 ] && "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    cuda=1
fi
if [ "$cuda" = 1 ]; then
    device=cuda precision=bf16 posts="${posts:-20000}" epochs="${epochs:-2}"
    card="$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))")"
    smi="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)"
    card="$card${smi:+ (nvidia-smi: $smi)}"
else
    device=cpu precision=auto posts="${posts:-300}" epochs="${epochs:-1}"
    card="no CUDA: CPU fallback on a tiny slice, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')"
fi
[ -d "$psytar" ] || tiny=1
cleanup=""
if [ -z "$work" ]; then
    work="$(mktemp -d)"; cleanup="$work"
fi
trap '[ -n "$cleanup" ] && rm -rf "$cleanup"' EXIT
mkdir -p "$work"

# The data: train/dev (labelled) and POSTS distinct posts to embed and predict.
"$PYTHON" - "$psytar" "$work" "$posts" "$tiny" "$cuda" <<'EOF'
import json, sys
from pathlib import Path

import numpy as np
import polars as pl

psytar, work, posts, tiny, cuda = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1"


def write(name, rows):
    with open(work / name, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


if tiny:  # a tiny generated set: side-effect words make label 1
    rng = np.random.default_rng(0)
    plain = "took my pill today feeling fine doctor said keep going refill at the pharmacy morning dose".split()
    harm = "nausea headache dizzy insomnia rash tired anxious weight gain".split()
    def post(i, label):
        words = list(rng.choice(plain, size=8)) + (list(rng.choice(harm, size=2)) if label else [])
        rng.shuffle(words)
        return {"id": f"t{i}", "text": " ".join(words), "label": label}
    frames = {s: [post(f"{s}{i}", i % 2) for i in range(n)] for s, n in (("train", 64), ("dev", 32))}
else:
    frames = {}
    for split in ("train", "dev"):
        raw = pl.read_csv(psytar / f"{split}.tsv", separator="\t", quote_char='"', infer_schema=False)
        raw = raw.filter(pl.col("sentences").is_not_null() & (pl.col("sentences").str.strip_chars() != ""))
        rows = [{"id": f"{split}-{i}", "text": t, "label": int(a)} for i, (t, a) in enumerate(zip(raw["sentences"], raw["ADR"]))]
        frames[split] = rows if cuda else rows[: {"train": 64, "dev": 32}[split]]
write("train.jsonl", frames["train"])
write("dev.jsonl", frames["dev"])
texts = [r["text"] for r in frames["train"] + frames["dev"]]
write("posts.jsonl", [{"id": f"p{i}", "text": f"{texts[i % len(texts)]} #{i}"} for i in range(posts)])
EOF

smm4h() { "$PYTHON" -m smm4h_cli "$@"; }
calc() { awk "BEGIN { printf \"%.1f\", $1 }"; }
n_train=$(wc -l < "$work/train.jsonl")

start=$(date +%s.%N)
smm4h train --train "$work/train.jsonl" --validation "$work/dev.jsonl" --epochs "$epochs" --precision "$precision" \
    --device "$device" --out "$work/run" --force --quiet > /dev/null
train_s=$(calc "$(date +%s.%N) - $start")
f1=$("$PYTHON" -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['best_f1_mean']:.3f}\")" "$work/run/summary.json")
echo "gpu check: train MiniLM on $n_train posts, $epochs epoch(s), --precision $precision: $train_s s ($(calc "$train_s / $epochs") s/epoch, evaluation included); best validation F1 $f1; on $card"

start=$(date +%s.%N)
smm4h predict "$work/run" "$work/posts.jsonl" --out "$work/predictions.jsonl" --device "$device" --force --quiet
predict_s=$(calc "$(date +%s.%N) - $start")
echo "gpu check: predict $posts posts: $predict_s s ($(calc "$posts / $predict_s") posts/s, start and model load included); on $card"

"$PYTHON" - "$work" "$device" "$precision" "$card" <<'EOF'
import sys, time
from pathlib import Path

import numpy as np

from smm4h_cli.analysis.embeddings import SentenceEmbedder
from smm4h_cli.analysis.projection import tsne, tsne_backend
from smm4h_cli.io import read_records

work, device, precision, card = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
texts = read_records(work / "posts.jsonl")["text"].to_list()
fp32 = SentenceEmbedder(None, device=device, batch_size=128)
ours = SentenceEmbedder(None, device=device, batch_size=128, precision=precision)
fp32(texts[:128]), ours(texts[:128])  # warm-up
t = time.perf_counter(); base = fp32(texts); base_s = time.perf_counter() - t
t = time.perf_counter(); vectors = ours(texts); ours_s = time.perf_counter() - t
cosine = float(np.min(np.sum(base * vectors, axis=1)))
print(f"gpu check: embed {len(texts):,} posts in {ours.precision}: {ours_s:.1f} s ({len(texts) / ours_s:,.0f} posts/s); "
      f"fp32 {base_s:.1f} s: speed-up {base_s / ours_s:.2f}x, min cosine to fp32 {cosine:.5f}; on {card}")
t = time.perf_counter(); xy = tsne(vectors, min(30.0, (len(texts) - 1) / 3), 0, fft_from=min(len(texts), 10_000))
tsne_s = time.perf_counter() - t
assert xy.shape == (len(texts), 2) and np.isfinite(xy).all()
print(f"gpu check: t-SNE of {len(texts):,} points ({tsne_backend(len(texts), min(len(texts), 10_000))}, on the CPU): {tsne_s:.1f} s; on {card}")
EOF
