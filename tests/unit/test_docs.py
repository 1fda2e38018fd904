"""The documentation (issue 29): the MkDocs site builds with no warning (broken links and
anchors included), the README stays short and its links lead somewhere, every command's
``--help`` names a page that exists, and every ``reachtest`` command written in a fenced
block of the README or the docs is one the command line accepts (its commands, options
and values), so the docs cannot drift from the program. The README's examples are run
in the lab by ``tests/lab/test_docs_examples.py``."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from reachtest.cli import cli
from reachtest.cli.pages import PAGES, pages_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\s*$")
#: What may stand before ``reachtest`` on a command line in the docs.
PREFIX = re.compile(r"^(?:\$ )?(?:sudo )?(?:\S*/)?reachtest(?= |$)")


def fenced_blocks(text: str) -> Iterator[tuple[str, list[str]]]:
    """(language, lines) of every fenced block."""
    language, lines, inside = "", [], False
    for line in text.splitlines():
        match = FENCE.match(line)
        if match and not inside:
            language, lines, inside = match.group(1), [], True
        elif line.startswith("```") and inside:
            inside = False
            yield language, lines
        elif inside:
            lines.append(line)


def checkable(part: str) -> bool:
    """A command line, not a synopsis (``[--since 7d]``, ``...``) or a shell snippet."""
    return bool(PREFIX.match(part)) and not re.search(r"\[|\.\.\.|\$\(|<[A-Z]|\|", part)


def command_lines() -> Iterator[tuple[str, str, bool]]:
    """(file, command, whole) of every reachtest command in a sh block or after ``$ `` in a
    console block (whole: it must be complete), and in a code span of the text (it may be
    a mention: ``reachtest run`` without its ``--config``)."""
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        text = path.read_text()
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if checkable(span):
                yield path.name, span, False
        for language, lines in fenced_blocks(text):
            if language not in {"sh", "console", ""}:
                continue
            commands = (
                [ln for ln in lines if ln.startswith("$ ")] if language == "console" else lines
            )
            joined: list[str] = []
            for line in commands:
                if joined and joined[-1].endswith("\\"):
                    joined[-1] = joined[-1][:-1] + " " + line.strip()
                else:
                    joined.append(line.strip())
            for line in joined:
                for part in re.split(r"\s*(?:&&|\|\||;|\|)\s+", line):
                    if checkable(part):
                        yield path.name, part, True


def rest_of(ctx: click.Context) -> list[str]:
    """What a group's parsing left for its subcommand (click 8.2 deprecates the name)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return [*ctx.protected_args, *ctx.args]


def parse(words: list[str]) -> None:
    """Parse ``words`` (after ``reachtest``) as click would, running nothing."""
    ctx = cli.make_context("reachtest", list(words), resilient_parsing=False)
    command: click.Command = cli
    args = rest_of(ctx)
    while isinstance(command, click.Group) and args:
        _, sub, rest = command.resolve_command(ctx, args)
        assert sub is not None
        command = sub
        ctx = command.make_context(sub.name, rest, parent=ctx)
        args = rest_of(ctx) if isinstance(command, click.Group) else []


COMMANDS = sorted(set(command_lines()))


def test_the_docs_hold_commands_to_check() -> None:
    """The extraction finds the docs' commands (a broken pattern would check nothing)."""
    assert len(COMMANDS) >= 60, COMMANDS
    assert ("README.md", "$ reachtest run --config site.toml", True) in COMMANDS
    assert sum(whole for _, _, whole in COMMANDS) >= 20


def words_of(command: str) -> list[str]:
    """The words after ``reachtest``, without shell redirections."""
    words = shlex.split(command, comments=True)
    while words and not words[0].endswith("reachtest"):
        words.pop(0)
    kept: list[str] = []
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
        elif re.fullmatch(r"\d?>>?", word):
            skip = True  # "> FILE"
        elif not re.match(r"^\d?>", word):
            kept.append(word)
    return kept


@pytest.mark.parametrize(
    ("page", "command", "whole"), COMMANDS, ids=[f"{p}:{c}" for p, c, _ in COMMANDS]
)
def test_every_command_in_the_docs_is_accepted(page: str, command: str, whole: bool) -> None:
    try:
        parse(words_of(command))
    except click.exceptions.Exit:
        pass  # --help, --version
    except (click.MissingParameter, click.exceptions.NoArgsIsHelpError) as exc:
        if whole:  # a mention in the text may leave them out, a command to run may not
            pytest.fail(f"{page}: {command}: {exc.format_message()}")
    except click.BadParameter as exc:
        # A path in an example (/etc/reachtest/site.toml) need not exist on this machine.
        if not isinstance(exc.param.type if exc.param else None, click.Path):
            pytest.fail(f"{page}: {command}: {exc.format_message()}")
    except click.UsageError as exc:
        pytest.fail(f"{page}: {command}: {exc.format_message()}")


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a page left out of the navigation, a link to a page or an
    anchor that does not exist, each is a warning, and strict turns it into a failure."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "trace" / "index.html").is_file()
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = set(re.findall(r"[\w-]+\.md", str(nav)))
    assert listed == {p.name for p in DOCS.glob("*.md")}


def test_mkdocs_strict_fails_on_a_broken_link(tmp_path: Path) -> None:
    """The check above can fail: a copy of the docs with a link to a missing anchor."""
    copy = tmp_path / "copy"
    (copy / "docs").mkdir(parents=True)
    for page in DOCS.glob("*.md"):
        (copy / "docs" / page.name).write_text(page.read_text())
    (copy / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text())
    page = copy / "docs" / "trace.md"
    page.write_text(page.read_text() + "\nSee [the record](record.md#no-such-anchor).\n")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=copy, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "no-such-anchor" in done.stdout + done.stderr


def test_the_readme_is_short_and_its_links_lead_somewhere() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert len(local) >= 15, local
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing


def every_command(group: click.Group, path: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        where = f"{path} {name}".strip()
        yield where, command
        if isinstance(command, click.Group):
            yield from every_command(command, where)


@pytest.mark.parametrize("path", ["", *(p for p, _ in every_command(cli))])
def test_every_command_s_help_names_its_pages(path: str) -> None:
    pages = pages_for(path)
    assert all((DOCS / page).is_file() for page in pages), pages
    shown = CliRunner().invoke(cli, [*path.split(), "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert f"Documentation: {', '.join(pages)} (docs/ in the source" in shown.output
    if path:  # a new command gets a page of its own, not the index by default
        assert path.split(maxsplit=1)[0] in PAGES, "name its page in reachtest/cli/pages.py"


def test_nested_lists_are_indented_by_four() -> None:
    """Python-Markdown (MkDocs) nests a list only at four spaces: an item at two would be
    drawn flat on the site while GitHub nests it."""
    flat = []
    for page in sorted(DOCS.glob("*.md")):
        inside = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                inside = not inside
            indent = len(line) - len(line.lstrip())
            if not inside and re.match(r"\s*(?:[-*]|\d+\.) ", line) and indent % 4:
                flat.append(f"{page.name}:{number}")
    assert not flat
