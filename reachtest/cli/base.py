"""The command group, its messages and ``main``: parse, run a command, map errors to exit codes.

Imports of the heavy layers happen inside the commands, so ``reachtest --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from reachtest import __version__
from reachtest.errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    ReachtestError,
    UsageError,
)
from reachtest.interrupts import terminate_as_interrupt

if TYPE_CHECKING:
    from rich.console import Console


EXIT_CODES_HELP = """\b
Exit codes:
  0  success (every traced service answered)
  1  a service or host was not reached
  2  usage or input error
  3  permission or environment error (not root, no netns, no nft, lab not up)
  4  internal error (a bug: please report it)
"""


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        _console(stderr=True).print(f"[dim]… {message}[/dim]")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="reachtest")
def cli() -> None:
    """reachtest: where, and how, are my packets to that port dying?

    Traces ICMP next to TCP and UDP probes to chosen ports, hop by hop, and says
    where a service is blocked while the host still pings.
    """


# -- entry point ------------------------------------------------------------------------


def _say(message: str, kind: str = "error: ") -> None:
    """The one error line (or, with ``kind=""``, a notice): whatever it quotes (a host, a
    record's value) is shown, its control characters and newlines written out, never sent
    to the terminal."""
    from reachtest.report.escape import for_terminal

    click.echo(f"reachtest: {kind}{for_terminal(message)}", err=True)


def _tell(message: str) -> None:
    """A notice on stderr (not an error), escaped as ``_say`` escapes."""
    _say(message, kind="")


#: The variable click's completion scripts set when they call reachtest back.
COMPLETE_VAR = "_REACHTEST_COMPLETE"

#: Errors of writing to standard output or error that are the user's, not a bug: a full
#: device (> /dev/full), a closed stream (>&-), a reader gone (| head), an I/O error.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EPIPE, errno.EBADF, errno.EIO})


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; the one place that turns errors into one line and an exit code."""
    if sys.stdout is None or sys.stderr is None:  # started with stdout or stderr closed
        if sys.stderr is not None:
            sys.stderr.write("reachtest: error: standard output is closed (>&-)\n")
        return EXIT_USAGE
    with contextlib.suppress(ValueError):  # not in the main thread (an embedding program)
        terminate_as_interrupt()
    instruction = os.environ.get(COMPLETE_VAR)
    if instruction:  # a completion script (`reachtest completion SHELL`) calling back
        from click.shell_completion import shell_complete

        return shell_complete(cli, {}, "reachtest", COMPLETE_VAR, instruction)
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        if any("\x00" in arg for arg in args):  # only a program can pass one, not a shell
            raise UsageError("an argument holds a NUL byte")
        # Not cli.main(): it would catch Ctrl-C itself and print an empty line first.
        with cli.make_context("reachtest", args, obj={"argv": tuple(args)}) as ctx:
            result: Any = cli.invoke(ctx)
        sys.stdout.flush()  # a full or closed output fails here, where it is reported
    except ReachtestError as exc:
        _say(str(exc))
        return exc.exit_code
    except click.exceptions.Abort:
        _say("interrupted")
        return 130
    except click.exceptions.Exit as exc:  # --help, --version
        sys.stdout.flush()
        return int(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare `reachtest` (or `lab`)
        if exc.ctx is not None:
            click.echo(exc.ctx.get_help())
        return EXIT_USAGE
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _say(exc.format_message() + hint)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:
            with contextlib.suppress(OSError):
                _say(f"cannot write the output: {exc.strerror or exc}")
            return EXIT_USAGE
        if os.environ.get("REACHTEST_DEBUG"):
            raise
        _say(f"internal error: {type(exc).__name__}: {exc} (REACHTEST_DEBUG=1 shows a traceback)")
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK
