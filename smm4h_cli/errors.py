"""The package's exception types.

Library code raises these; the CLI turns them into a message on stderr and an exit code at one
place (``smm4h_cli.cli.app``). Messages are written for the person at the terminal: they name
the file, the line or row, what was expected and how to fix it.
"""

from __future__ import annotations


class Smm4hError(Exception):
    """Base class of every error the toolkit reports to a user."""

    exit_code = 1


class InputError(Smm4hError, ValueError):
    """Bad usage or bad input data: exit code 2, nothing written.

    Also a ``ValueError``, so library callers that validate values catch it as they would any
    bad value (an options dataclass's ``__post_init__`` raises it)."""

    exit_code = 2


class RunError(Smm4hError):
    """A failure while running (a server that died mid-run, a training crash): exit code 1."""

    exit_code = 1
