"""Man pages (issue 29): one per command from the click definitions, lint-clean for
mandoc, rendered by man; carried by the wheel as its data files (share/man/man1) and
installed beside the development environment's console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest

from reachtest.cli import cli
from reachtest.cli.manpages import mend, write_pages

ROOT = Path(__file__).resolve().parents[2]


def command_pages(group: click.Group, prefix: str = "reachtest") -> set[str]:
    """The page every command of the click tree should have."""
    names = {f"{prefix}.1"}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            names |= command_pages(command, f"{prefix}-{name}")
        else:
            names.add(f"{prefix}-{name}.1")
    return names


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_pages(tmp_path_factory.mktemp("man"))


def test_every_command_has_a_page_that_names_all_its_options(pages: list[Path]) -> None:
    assert {p.name for p in pages} == command_pages(cli)
    trace = next(p for p in pages if p.name == "reachtest-trace.1").read_text()
    command = cli.commands["trace"]
    for option in command.params:
        for flag in getattr(option, "opts", []):
            if flag.startswith("--"):
                assert flag.replace("-", "\\-") in trace, flag


def test_every_page_is_lint_clean_and_renders(pages: list[Path]) -> None:
    mandoc, man = shutil.which("mandoc"), shutil.which("man")
    assert mandoc and man, "mandoc and man-db are needed (bash scripts/setup installs them)"
    for page in pages:
        lint = subprocess.run(
            [mandoc, "-T", "lint", "-W", "warning", str(page)], capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        assert lint.stdout + lint.stderr == "", lint.stdout + lint.stderr
        shown = subprocess.run(
            [man, "-l", str(page)], capture_output=True, text=True, check=False,
            env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "MANPAGER": "cat"},
        )  # fmt: skip
        assert shown.returncode == 0 and shown.stderr == "", (page.name, shown.stderr)
        assert "\b" not in shown.stdout.replace("\b_", "").replace("_\b", "")
    doctor = next(p for p in pages if p.name == "reachtest-doctor.1").read_text()
    assert "nothing is sent" in doctor


def test_click_s_unwrapped_paragraphs_become_no_fill_blocks() -> None:
    text = ".SH DESCRIPTION\n.PP\nWrapped text.\n\b\nkept  as\nit is\n\n.SH OPTIONS\n.venv/bin\n"
    assert mend(text) == (
        ".SH DESCRIPTION\nWrapped text.\n.nf\nkept  as\nit is\n.fi\n\n.SH OPTIONS\n\\&.venv/bin\n"
    )


def test_the_wheel_carries_the_pages_as_its_data_files(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("reachtest-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = {Path(n).name for n in archive.namelist() if "/data/share/man/man1/" in n}
    assert names == command_pages(cli)


def test_the_development_environment_has_them_beside_its_console_script(
    pages: list[Path],
) -> None:
    installed = Path(sys.prefix) / "share" / "man" / "man1"
    for page in pages:
        there = installed / page.name
        assert there.exists(), f"{there} missing: run bash scripts/setup"
        fresh, old = page.read_text().splitlines()[1:], there.read_text().splitlines()[1:]
        assert fresh == old, f"{there} is out of date: run bash scripts/setup"
