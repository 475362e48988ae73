"""``smm4h embed-cluster``: the paper's Figure 2 (MiniLM, k-means, t-SNE) and diversity as numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from smm4h_cli.analysis.cluster_outputs import OUTPUT_FILES, existing_outputs, table_rows, write_outputs
from smm4h_cli.analysis.clustering import EmbedClusterOptions, embed_cluster
from smm4h_cli.analysis.embeddings import default_cache_dir
from smm4h_cli.analysis.groups import groups_from_frames, infer_roles
from smm4h_cli.cli._common import Device, Force, Format, IdCol, LabelCol, Quiet, Seed, TableFormat, TextCol, columns, emit_table, err, flag
from smm4h_cli.cli._progress import ProgressDisplay
from smm4h_cli.errors import InputError
from smm4h_cli.io import check_outputs, check_writable, read_records, short_names


def embed_cluster_cli(
    files: Annotated[list[Path], typer.Argument(help="Files of posts (.jsonl, .parquet, .csv, .tsv); '-' reads JSON lines from stdin.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tsne.png, tsne.svg, points.parquet and metrics.json.", show_default=False)],
    by_label: Annotated[bool, flag("--by-label", help="One group per file and label (train/label 0, train/label 1); single-label files stay one group.")] = False,
    synthetic: Annotated[list[Path] | None, typer.Option("--synthetic", help="Treat this file as synthetic (repeatable). Files whose records all have source = synthetic, as `smm4h generate` writes them, are synthetic anyway.", show_default=False)] = None,
    sample: Annotated[int, typer.Option("--sample", help="Posts per group: every group is sampled to min(SAMPLE, smallest group). 0 uses all.")] = 1000,
    k: Annotated[str, typer.Option("--k", help="k-means clusters, or 'auto' (best silhouette for k = 2..20).")] = "10",
    perplexity: Annotated[float, typer.Option("--perplexity", help="t-SNE perplexity (lowered for tiny samples).")] = 30.0,
    copy_threshold: Annotated[float, typer.Option("--copy-threshold", help="Cosine similarity to the nearest real post at or above which a synthetic post counts as a copy.")] = 0.9,
    model: Annotated[str | None, typer.Option("--model", help="sentence-transformers model id or folder \\[default: the embedded all-MiniLM-L6-v2].", show_default=False)] = None,
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Posts per encoding batch.")] = 64,
    precision: Annotated[str, typer.Option("--precision", help="Encoder arithmetic: fp32, bf16 (autocast; vectors within cosine 0.9999 of fp32, cached apart), or auto (bf16 where the device computes it natively).")] = EmbedClusterOptions.precision,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Embedding cache folder (Parquet, keyed by model and text hash) \\[default: ~/.cache/smm4h/embeddings].", show_default=False)] = None,
    no_cache: Annotated[bool, flag("--no-cache", help="Neither read nor write the embedding cache.")] = False,
    no_plot: Annotated[bool, flag("--no-plot", help="Skip tsne.png/tsne.svg (headless batch use); points and metrics are still written, and with --force an earlier run's figures in --out are removed.")] = False,
    seed: Seed = 0,
    fmt: Format = TableFormat.table,
    force: Force = False,
    quiet: Quiet = False,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    id_col: IdCol = None,
) -> None:
    """Embed posts, cluster them with k-means and draw t-SNE (the paper's Figure 2), with diversity numbers per group.

    Per group: the Vendi score (effective number of distinct posts, size-matched), dispersion (cosine distance to the centroid and between pairs), the k-means clusters it occupies and their entropy, the share of real-positive clusters a synthetic group reaches, and how many synthetic posts nearly copy a real one. The paper's three groups:

        smm4h embed-cluster train.jsonl synthetic.jsonl --by-label --out figure2
    """
    options = EmbedClusterOptions(
        k=k, sample=sample, seed=seed, device=device, model=model, perplexity=perplexity,
        copy_threshold=copy_threshold, batch_size=batch_size, precision=precision,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
    )
    if sum(str(f) == "-" for f in files) > 1:
        raise InputError("stdin ('-') can be read only once; give it a single time.")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --out takes a folder for tsne.png, points.parquet and metrics.json.")
    check_outputs([out / name for name in OUTPUT_FILES], files)
    check_writable(out, folder=True)
    clash = existing_outputs(out)
    if clash and not force:
        also = " (with --no-plot, --force removes the old tsne.png and tsne.svg)" if no_plot else ""
        raise InputError(f"{clash[0]} exists. Pass --force to replace the outputs in {out}{also}, or choose another --out.")
    named_synthetic = {str(p) for p in synthetic or []}
    unknown = named_synthetic - {str(f) for f in files}
    if unknown:
        raise InputError(f"--synthetic {sorted(unknown)[0]} is not one of the input files; name a FILE given on the command line.")

    cols = columns(text_col, label_col, id_col)
    frames = [read_records(f, cols) for f in files]
    names = short_names(files)
    syn, pos = infer_roles(list(zip(names, frames)), [n for n, f in zip(names, files) if str(f) in named_synthetic])
    options = EmbedClusterOptions(**{**options.__dict__, "synthetic": syn, "positives": pos})
    groups = groups_from_frames(list(zip(names, frames)), by_label)

    with ProgressDisplay(quiet) as show:
        result = embed_cluster(groups, options, progress=show)
    written = write_outputs(result, out, plot=not no_plot, seed=seed)

    metrics = result.metrics
    if fmt is TableFormat.json:
        sys.stdout.write(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    else:
        s = metrics["settings"]
        caption = f"{s['model'].removeprefix('embedded:')}; k = {s['k']}; Vendi at n = {s['vendi_n']:,}; seed {seed}"
        emit_table(table_rows(metrics), fmt, title="Diversity in embedding space (paper Figure 2)", caption=caption, digits=3)
        if fmt is TableFormat.table:
            sys.stdout.write("".join(f"{g['summary']}\n" for g in metrics["groups"]))
        elif fmt is TableFormat.markdown:
            sys.stdout.write("\n" + "".join(f"- {g['summary']}\n" for g in metrics["groups"]))
    if not quiet:
        cached = "" if options.cache_dir is None else f" ({result.encoded:,} new texts encoded; embedding cache in {options.cache_dir})"
        err.print(escape(f"Wrote {', '.join(p.name for p in written)} to {out}{cached}."), soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("embed-cluster", help=embed_cluster_cli.__doc__, short_help="Figure 2: embeddings, k-means, t-SNE, and diversity numbers per group (Vendi, coverage, copying).")(embed_cluster_cli)
