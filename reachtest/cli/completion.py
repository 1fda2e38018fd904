"""`reachtest completion SHELL`: the shell's completion script, from click's own machinery.

The script calls ``reachtest`` back with ``_REACHTEST_COMPLETE`` set; ``base.main``
answers that before any command runs.
"""

from __future__ import annotations

import click

from reachtest.cli.base import COMPLETE_VAR, cli

SHELLS = ("bash", "zsh", "fish")


@cli.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
def completion(shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish): commands, options,
    choices and the lab's scenario names complete with Tab.

    \b
    bash:  eval "$(reachtest completion bash)"          (in ~/.bashrc), or
           reachtest completion bash > ~/.local/share/bash-completion/completions/reachtest
    zsh:   eval "$(reachtest completion zsh)"           (in ~/.zshrc, after compinit)
    fish:  reachtest completion fish > ~/.config/fish/completions/reachtest.fish
    """
    from click.shell_completion import get_completion_class

    kind = get_completion_class(shell)
    assert kind is not None  # every name in SHELLS is one of click's
    click.echo(kind(cli, {}, "reachtest", COMPLETE_VAR).source())
