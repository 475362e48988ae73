"""Read, validate and write records: the data contract every command shares.

A record is a post: ``id`` (string), ``text`` (non-empty string), ``label`` (0 or 1, absent for
unlabelled data), an optional ``source``; other columns pass through untouched (a column whose
values have no one type is read as written and refused where it would be written). Files are read
by extension (JSON lines, Parquet, CSV, TSV) and ``-`` is JSON lines on stdin/stdout. Every
problem is an :class:`~smm4h_cli.errors.InputError` that names the file and the line or row.
Writes go to a temporary file in the same folder and are renamed into place, so a failed
command never leaves half a file behind.
"""

from smm4h_cli.io.parse import (  # noqa: F401
    FORMATS,
    ID_COLUMNS,
    LABEL_COLUMNS,
    STDIO,
    TEXT_COLUMNS,
    display_name,
    format_of,
    jsonl_lines,
    open_input,
    stem_of,
    unreadable,
)
from smm4h_cli.io.records import (  # noqa: F401
    Columns,
    check_predictions,
    read_predictions,
    read_records,
)
from smm4h_cli.io.write import (  # noqa: F401
    atomic_write,
    check_frame,
    check_outputs,
    check_writable,
    short_names,
    write_json,
    write_records,
    write_text,
)
