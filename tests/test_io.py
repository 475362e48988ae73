"""The data contract: every format, column mapping, and every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

from smm4h_cli.errors import InputError
from smm4h_cli.io import Columns, read_records, write_records

from conftest import write_jsonl


def test_reads_jsonl_in_order_with_ids_and_labels(tiny: Path):
    frame = read_records(tiny)
    assert frame.columns[:3] == ["id", "text", "label"]
    assert frame["id"].to_list() == list("abcdef")
    assert frame["label"].to_list() == [1, 1, 0, 0, 0, 0]


def test_reads_official_smm4h_tsv_without_flags(tmp_path: Path):
    p = tmp_path / "task5.tsv"
    p.write_text('tweet_id\ttext\tlabel\n00123\t"quoted" start of a tweet\t1\n456\tplain tweet\t0\n', encoding="utf-8")
    frame = read_records(p)
    assert frame["id"].to_list() == ["00123", "456"]  # ids stay text: leading zeros kept
    assert frame["text"].to_list() == ['"quoted" start of a tweet', "plain tweet"]
    assert frame["label"].to_list() == [1, 0]


def test_reads_tsv_whose_quoted_fields_hold_line_breaks(tmp_path: Path):
    # PsyTAR's TSV, as spreadsheets export it: a quoted sentence spanning two lines.
    p = tmp_path / "export.tsv"
    p.write_text('sentences\tADR\nplain one\t0\n"two lines,\na ""rage"" too"\t1\n', encoding="utf-8")
    frame = read_records(p, Columns(text="sentences", label="ADR"))
    assert frame["text"].to_list() == ["plain one", 'two lines,\na "rage" too']
    assert frame["label"].to_list() == [0, 1]


def test_maps_other_layouts_and_passes_other_columns_through(tmp_path: Path):
    p = tmp_path / "psytar.tsv"
    p.write_text("sentences\tADR\tWD\nfelt dizzy all day\t1\t0\nworks well\t0\t0\n", encoding="utf-8")
    frame = read_records(p, Columns(text="sentences", label="ADR"))
    assert frame.columns == ["id", "text", "label", "WD"]
    assert frame["id"].to_list() == ["psytar-1", "psytar-2"]  # generated: stem + row number
    assert frame["label"].to_list() == [1, 0]


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".csv", ".tsv", ".parquet"])
def test_round_trip_every_format(tmp_path: Path, tiny: Path, suffix: str):
    frame = read_records(tiny).with_columns(pl.lit("raw").alias("source"))
    out = tmp_path / f"out{suffix}"
    write_records(frame, out)
    assert read_records(out).equals(frame)


def test_reads_stdin_as_jsonl(tiny: Path):
    frame = read_records("-", stdin=io.BytesIO(tiny.read_bytes()))
    assert frame.height == 6


def test_write_refuses_to_replace_without_force(tmp_path: Path, tiny: Path):
    frame = read_records(tiny)
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    with pytest.raises(InputError, match="--force"):
        write_records(frame, out)
    assert out.read_text() == "precious\n"
    write_records(frame, out, force=True)
    assert read_records(out).height == 6


def test_written_files_get_the_usual_permissions(tmp_path: Path, tiny: Path):
    import os

    out = tmp_path / "out.jsonl"
    write_records(read_records(tiny), out)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() makes them, not mkstemp's 0600


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path):
    out = tmp_path / "out.tsv"
    out.write_text("precious\n")
    frame = pl.DataFrame({"id": ["1"], "text": ["a\ttab"], "label": [1]})
    with pytest.raises(InputError, match="TSV cannot hold"):
        write_records(frame, out, force=True)
    assert out.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


# --------------------------------------------------------------------- bad input, through the CLI


def _bad(cli, path, *extra):
    result = cli("ngrams", path, *extra)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return result.stderr


def test_missing_file(cli, tmp_path: Path):
    assert "no such file" in _bad(cli, tmp_path / "nope.jsonl")


def test_unknown_extension(cli, tmp_path: Path):
    p = tmp_path / "posts.xlsx"
    p.write_text("x")
    msg = _bad(cli, p)
    assert "unknown file format" in msg and ".xlsx" in msg and ".jsonl" in msg


def test_malformed_json_names_the_line(cli, tmp_path: Path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok", "label": 0}\n\n{"text": "broken", "label": 1\n')
    msg = _bad(cli, p)
    assert "line 3" in msg and "not valid JSON" in msg


def test_no_text_column_lists_columns_and_flag(cli, tmp_path: Path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"tweet": "hi there", "y": 1}])
    msg = _bad(cli, p)
    assert "tweet, y" in msg and "--text-col" in msg


def test_unknown_mapped_column(cli, tiny: Path):
    msg = _bad(cli, tiny, "--text-col", "body")
    assert "no column 'body'" in msg and "id, text, label" in msg


def test_empty_text_names_rows(cli, tmp_path: Path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"text": "fine", "label": 0}, {"text": "   ", "label": 1}, {"text": "", "label": 0}])
    msg = _bad(cli, p)
    assert "empty or missing text" in msg and "lines 2, 3" in msg


@pytest.mark.parametrize("value, shown", [("yes", "'yes'"), (2, "2")])
def test_labels_outside_zero_one(cli, tmp_path: Path, value, shown):
    p = write_jsonl(tmp_path / "t.jsonl", [{"text": "fine", "label": 0}, {"text": "odd", "label": value}])
    msg = _bad(cli, p)
    assert "labels must be 0 or 1" in msg and f"{shown} on line 2" in msg


def test_duplicate_ids(cli, tmp_path: Path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"id": "x", "text": "a b"}, {"id": "y", "text": "c d"}, {"id": "x", "text": "e f"}])
    msg = _bad(cli, p)
    assert "duplicate id 'x'" in msg and "line 1 and line 3" in msg


def test_non_utf8_bytes(cli, tmp_path: Path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"text,label\ncaf\xe9 au lait,0\n")
    msg = _bad(cli, p)
    assert "line 2" in msg and "not UTF-8" in msg and "iconv" in msg


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(cli, tmp_path: Path, content):
    p = tmp_path / "t.jsonl"
    p.write_text(content)
    assert "is empty" in _bad(cli, p)


def test_header_only_csv(cli, tmp_path: Path):
    p = tmp_path / "t.csv"
    p.write_text("text,label\n")
    assert "no rows" in _bad(cli, p)


def test_corrupt_parquet(cli, tmp_path: Path):
    p = tmp_path / "t.parquet"
    p.write_bytes(b"not parquet at all")
    assert "not a readable Parquet file" in _bad(cli, p)
