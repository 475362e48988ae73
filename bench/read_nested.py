"""Reading JSON lines with an object column: ``read_records`` against polars' own inference.

Column types are built from every value (:mod:`smm4h_cli.io.types`), where polars infers a nested
column from its first value; this measures what that costs. It writes N posts (default 200,000)
with a 4-key object column to a temporary file, and prints the CPU seconds of ``read_records`` and
of the plain read (the same ``json.loads`` of every line, then ``pl.DataFrame`` of the rows, as the
reader did before types were built) and their ratio. Usage, from the repository root:
PYTHONPATH=. python bench/read_nested.py [N]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

import smm4h_cli
from smm4h_cli.io import read_records


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nested.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for i in range(n):
                meta = {"model": "gpt", "temperature": 0.7, "call": i, "shown": ["a", "b"]}
                out.write(json.dumps({"id": str(i), "text": f"post number {i} about drug x", "label": i % 2, "meta": meta}) + "\n")
        start = time.process_time()
        plain = pl.DataFrame([json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line])
        base = time.process_time() - start
        start = time.process_time()
        typed = read_records(path)
        ours = time.process_time() - start
    assert typed.schema["meta"] == plain.schema["meta"], (typed.schema, plain.schema)
    print(f"smm4h_cli from {Path(smm4h_cli.__file__).parent.parent}")
    print(f"{n:,} posts, 4-key object column: read_records {ours:.2f} s, plain polars read {base:.2f} s, ratio {ours / base:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
