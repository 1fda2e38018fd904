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
        (["probe", "198.18.6.2", "-p", "tcp/0"], 2, "the port must be 1..65535"),
        (["probe", "198.18.6.2", "-p", "udp/70000"], 2, "the port must be 1..65535"),
        (["probe", "198.18.6.2", "-p", "sctp/5"], 2, "the protocol must be icmp, tcp or udp"),
        (["probe", "198.18.6.2", "-p", "tcp/https"], 2, "the port must be a number"),
        (["probe", "198.18.6.2", "-m", "0"], 2, "max TTL must be"),
        (["probe", "198.18.6.2", "-f", "9", "-m", "3"], 2, "max TTL must be 9..255"),
        (["probe", "198.18.6.2", "-i", "-1"], 2, "interval must not be negative"),
        (["probe", "198.18.6.2", "--timeout", "0"], 2, "timeout must be positive"),
        (["probe", "198.18.6.2", "--payload", "zz"], 2, "--payload must be hex"),
        (["probe", "198.18.6.2", "--no-icmp"], 2, "nothing to probe"),
        (["probe", "2001:db8::1", "-4"], 2, "is not an IPv4 address"),
        (["probe"], 2, "Missing argument"),
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


def test_probe_without_raw_socket_rights_says_what_is_missing() -> None:
    """Exit 3 and a one-line message naming CAP_NET_RAW (as root, capabilities dropped)."""
    import os
    import shutil

    argv = [sys.executable, "-m", "reachtest", "probe", "127.0.0.1", "-c", "1"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop capabilities as root")
        argv = [setpriv, "--bounding-set=-all", "--inh-caps=-all", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "CAP_NET_RAW" in done.stderr
    assert done.stdout == ""
