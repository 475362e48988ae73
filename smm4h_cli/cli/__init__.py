"""The ``smm4h`` command line: a Typer app with one thin module per command.

Errors of the package's own types become a message on stderr and an exit code here, at one
place; commands never print tracebacks for bad input.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from smm4h_cli import __version__
from smm4h_cli.cli._common import err, flag
from smm4h_cli.errors import Smm4hError


class _FlagHelp:
    """``--help`` takes no value, so ``--help`` shows no type beside it, like every flag (see ``flag``)."""

    def get_help_option(self, ctx):  # noqa: D102
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Smm4hCommand(_FlagHelp, TyperCommand):
    pass


class _Smm4hGroup(_FlagHelp, TyperGroup):
    def invoke(self, ctx):  # noqa: D102 - the one place errors become exit codes
        try:
            return super().invoke(ctx)
        except Smm4hError as exc:
            err.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            # a command that goes on only with other options (train: --resume) leaves that command here
            again = ctx.meta.get("smm4h.resume")
            hint = f"go on with:\n  {escape(again)}" if again else "run the same command again to resume."
            err.print(f"[yellow]Interrupted.[/] Finished work is kept; {hint}", soft_wrap=True)
            raise typer.Exit(code=130) from None


app = typer.Typer(
    cls=_Smm4hGroup,
    name="smm4h",
    help="Will LLM-generated positive examples help my classifier, and if not, why not? "
    "The SMM4H 2024 study (Yamagishi & Nakamura) as a toolkit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold an API key
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smm4h {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, flag("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Will LLM-generated positive examples help my classifier, and if not, why not?"""


from smm4h_cli.cli import (  # noqa: E402  (the commands, in the order of the pipeline)
    compare as _compare,
    embed_cluster as _embed_cluster,
    generate as _generate,
    ngrams as _ngrams,
    predict as _predict,
    select as _select,
    study as _study,
    train as _train,
)

for _command in (_generate, _select, _train, _predict, _compare, _ngrams, _embed_cluster, _study):
    _command.register(app)
for _info in app.registered_commands:  # every command's --help shows no type either
    if _info.cls in (None, TyperCommand):
        _info.cls = _Smm4hCommand


def main() -> None:
    app(prog_name="smm4h")
