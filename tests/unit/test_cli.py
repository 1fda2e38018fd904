"""The CLI's contract: fast help, version, one-line errors with documented exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reachtest import __version__
from reachtest.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_lab_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "lab" in out and "Exit codes" in out and "permission or environment" in out


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from reachtest.cli import main; main(['--help']); "
        "names = ('scapy', 'pandas', 'matplotlib', 'rich', 'dns', 'icmplib'); "
        "heavy = [m for m in names if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reachtest", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and __version__ in done.stdout


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["lab", "up", "no-such-scenario"], 2, "no scenario 'no-such-scenario'"),
        (["lab", "up", "clean", "--hops", "0"], 2, "--hops must be from 1 to 20"),
        (["lab", "up", "clean", "--hops", "many"], 2, "'many' is not a valid integer"),
        (["lab", "up", "clean", "--name", "Bad Name"], 2, "bad lab name"),
        (["lab", "up", "clean", "--tcp-ports", "80,x"], 2, "--tcp-ports takes numbers"),
        (["lab", "up", "clean", "--tcp-ports", "70000"], 2, "out of range"),
        (["lab", "up", "--bogus"], 2, "No such option"),
        (["lab", "down", "--all", "--name", "x"], 2, "not both"),
        (["nope"], 2, "No such command"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    argv: list[str], code: int, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reachtest: error: "), err
    assert text in err
    assert "Traceback" not in err


def test_lab_list_runs_without_root(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    assert "tcp-rst-middlebox" in out and "combo" in out
