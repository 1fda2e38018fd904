"""Each command's ``--help`` (and man page) ends by naming its page of the documentation.

The pages are ``docs/*.md`` in the source (the MkDocs site) and ``share/doc/reachtest``
of an installed environment (the wheel's data files).
"""

from __future__ import annotations

import click

#: The documentation page of each command, by its path below ``reachtest``; a group's page
#: covers the subcommands that have none of their own.
PAGES: dict[str, tuple[str, ...]] = {
    "": ("index.md",),
    "trace": ("trace.md", "requests.md", "mtu.md", "multipath.md"),
    "show": ("trace.md", "record.md"),
    "demo": ("install.md",),
    "probe": ("probe.md",),
    "lab": ("lab.md",),
    "config": ("runs.md",),
    "run": ("runs.md",),
    "history": ("runs.md",),
    "diff": ("runs.md",),
    "schedule": ("runs.md", "exporter.md"),
    "exporter": ("exporter.md",),
    "doctor": ("privileges.md",),
    "completion": ("install.md",),
}


def pages_for(path: str) -> tuple[str, ...]:
    """The pages of the command at ``path`` ("lab up"), or of the nearest group that has."""
    parts = path.split()
    while parts and " ".join(parts) not in PAGES:
        parts.pop()
    return PAGES[" ".join(parts)]


def docs_line(path: str) -> str:
    pages = ", ".join(pages_for(path))
    return (
        f"Documentation: {pages} (docs/ in the source, share/doc/reachtest where it is "
        f"installed); man reachtest{'-' + path.replace(' ', '-') if path else ''}."
    )


def point_to_docs(group: click.Group, path: str = "") -> None:
    """Append the documentation line to the epilog of ``group`` and every command below."""
    commands: list[tuple[str, click.Command]] = [(path, group)]
    while commands:
        where, command = commands.pop()
        line = docs_line(where)
        if line not in (command.epilog or ""):
            command.epilog = f"{command.epilog}\n\n{line}" if command.epilog else line
        if isinstance(command, click.Group):
            commands += [(f"{where} {n}".strip(), c) for n, c in command.commands.items()]
