"""``smm4h select``: which synthetic posts to keep (dedup -> confidence -> diverse | random)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from smm4h_cli.cli._common import Device, Force, IdCol, LabelCol, Quiet, Seed, TextCol, Threads, columns, err, flag
from smm4h_cli.cli._progress import ProgressDisplay
from smm4h_cli.errors import InputError
from smm4h_cli.io import STDIO, check_writable, read_records, write_json, write_records


def select_cli(
    synthetic: Annotated[str, typer.Argument(help="Synthetic posts (.jsonl, .parquet, .csv, .tsv), e.g. the output of smm4h generate; '-' reads JSON lines from stdin.", show_default=False)],
    train: Annotated[Path, typer.Option("--train", help="The labelled real training posts: dedup drops copies of them; they must include positives (label 1).", show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Kept posts (format by extension; '-' for JSON lines on stdout). A file gets OUT.meta.json (counts dropped per rule and reason) beside it.")] = STDIO,
    dedup: Annotated[bool, flag("--dedup", help="Drop exact and near duplicates within the synthetic set (the first of each group stays) and copies of --train posts.")] = False,
    near: Annotated[float, typer.Option("--near", help="Cosine similarity (character 4-gram TF-IDF, as generate --similarity) at which two posts are near duplicates.")] = 0.9,
    confidence: Annotated[Path | None, typer.Option("--confidence", help="A smm4h train run folder trained on the real data: score every post, drop those outside [--min-prob, --max-prob].", show_default=False)] = None,
    min_prob: Annotated[float | None, typer.Option("--min-prob", help="With --confidence: drop posts whose probability of label 1 is below this (likely not positives) \\[default: 0.5].", show_default=False)] = None,
    max_prob: Annotated[float | None, typer.Option("--max-prob", help="With --confidence: also drop posts above this (too easy to teach anything) \\[default: none].", show_default=False)] = None,
    diverse: Annotated[int | None, typer.Option("--diverse", help="Keep N posts that cover the MiniLM embedding space: k-center greedy (farthest point first).", show_default=False)] = None,
    random: Annotated[int | None, typer.Option("--random", help="Keep N posts at random (seeded): the control --diverse must beat.", show_default=False)] = None,
    dropped: Annotated[str | None, typer.Option("--dropped", help="Also write the dropped posts, with dropped_by (the rule) and reason.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Posts per forward pass (scoring and embedding).")] = 64,
    seed: Seed = 0,
    device: Device = "auto",
    threads: Threads = None,
    force: Force = False,
    quiet: Quiet = False,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Choose which synthetic posts to keep: rules applied in the fixed order dedup -> confidence -> diverse | random.

    Each rule sees only what the rules before it kept. Kept posts keep their columns and order and gain a selection column (JSON: the rules that ran, the post's probability and pick order where there are). Examples:

        smm4h select synthetic.jsonl --train sample_data/task5/train.jsonl --dedup -o kept.jsonl

        smm4h select synthetic.jsonl --train train.jsonl --dedup --confidence runs/real --diverse 200 -o kept.jsonl --dropped dropped.jsonl

        smm4h select synthetic.jsonl --train train.jsonl --dedup --random 200 --seed 1 -o control.jsonl
    """
    from smm4h_cli.selection import SelectOptions, select

    if min_prob is not None and confidence is None:
        raise InputError("--min-prob needs --confidence RUN_DIR (the classifier that scores the posts).")
    options = SelectOptions(
        dedup=dedup, near=near, min_prob=0.5 if min_prob is None else min_prob, max_prob=max_prob, diverse=diverse,
        random=random, seed=seed, device=device, threads=threads, batch_size=batch_size,
    )
    _check_outputs(out, dropped, [synthetic, str(train)], force)
    cols = columns(text_col, label_col, id_col)
    synthetic_frame = read_records(synthetic, cols)
    train_frame = read_records(train, cols, require_label=True)
    with ProgressDisplay(quiet) as show:
        result = select(synthetic_frame, train_frame, options, run_dir=confidence, progress=show)
    write_records(result.kept, out, force=force)
    if dropped is not None:
        write_records(result.dropped, dropped, force=force)
    if out != STDIO:
        write_json(_meta(out), {
            "synthetic": synthetic, "train": str(train), "confidence": None if confidence is None else str(confidence),
            "options": {"near": near, "min_prob": options.min_prob, "max_prob": max_prob, "diverse": diverse, "random": random, "seed": seed},
            **result.to_dict(),
        })
    if not quiet:
        _print_summary(result)


def _check_outputs(out: str, dropped: str | None, inputs: list[str], force: bool) -> None:
    """Refuse, before any work, outputs that would overwrite an input or each other."""
    def same(a: str, b: str) -> bool:
        return a != STDIO and b != STDIO and os.path.abspath(a) == os.path.abspath(b)

    for flag_name, path in (("--out", out), ("--dropped", dropped)):
        if path is None:
            continue
        for source in inputs:
            if same(path, source):
                raise InputError(f"{flag_name} {path} is also an input file; write the selection to another file.")
        check_writable(path, force)
    if dropped is not None and (same(out, dropped) or (out == STDIO and dropped == STDIO)):
        raise InputError(f"--dropped {dropped} is the same as --out; give the dropped posts their own file.")
    if out != STDIO:  # the selection's summary beside --out
        meta = str(_meta(out))
        for source in inputs:
            if same(meta, source) or same(meta, str(_meta(source))):
                raise InputError(
                    f"--out {out} would write its summary to {meta}, which is {'an input file' if same(meta, source) else f'the summary of the input {source}'} "
                    f"(smm4h generate's record of how the posts were made). Give --out another name, e.g. {Path(out).with_name(Path(out).stem + '.selected' + Path(out).suffix)}."
                )
        if Path(meta).is_dir():
            raise InputError(f"the summary of --out, {meta}, is a folder; move it away or give another --out.")


def _meta(out: str) -> Path:
    """Where the selection's summary goes: beside ``out``, as ``smm4h generate`` writes its own."""
    return Path(out).with_suffix(".meta.json")


def _print_summary(result) -> None:
    lines = [f"posts in {result.posts_in:,}; kept {result.posts_kept:,}; dropped {result.posts_in - result.posts_kept:,}"]
    for rule in result.rules:
        counts = result.dropped_counts[rule]
        detail = ", ".join(f"{reason} {n:,}" for reason, n in counts.items())
        lines.append(f"{rule}: dropped {sum(counts.values()):,} ({detail})")
    if result.measures:
        lines.append(f"Vendi (MiniLM) {result.measures['vendi_before']:.1f} before {result.rules[-1]}, {result.measures['vendi_kept']:.1f} kept")
    lines.append(f"time {result.seconds:,.1f} s")
    err.print(escape("\n".join(lines)), soft_wrap=True)
    if result.short:
        s = result.short
        err.print(
            f"[yellow]--{s['rule']} {s['asked']:,} asked for more posts than the {s['available']:,} the earlier rules left; "
            f"all {s['available']:,} are kept.[/]", soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("select", help=select_cli.__doc__, short_help="Which synthetic posts to keep: dedup, classifier confidence, diverse or random subsets.")(select_cli)
