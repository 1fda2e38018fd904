"""Installed as a user installs it (issue 29): the wheel built from this tree, installed
with its dependencies into a fresh virtual environment outside the checkout, traces the
lab as uid 65534 (ordinary sockets), and brings its man pages; run from "/", so nothing
of the checkout is imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.conftest import MakeLab, reachtest_cmd

ROOT = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def installed(lab_ready: None) -> Iterator[Path]:
    """A virtual environment (readable by uid 65534) with the wheel installed."""
    folder = Path(tempfile.mkdtemp(prefix="reachtest-wheel-"))
    try:
        folder.chmod(0o755)
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), str(ROOT)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr[-2000:]
        (wheel,) = folder.glob("reachtest-*.whl")
        venv = folder / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        done = subprocess.run(
            [str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        yield venv
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_installed_wheel_traces_the_lab_as_an_ordinary_user(
    installed: Path, make_lab: MakeLab
) -> None:
    lab = make_lab("tcp-drop")
    exe = str(installed / "bin" / "reachtest")
    where = subprocess.run(
        [str(installed / "bin/python"), "-c", "import reachtest; print(reachtest.__file__)"],
        capture_output=True, text=True, cwd="/", check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(installed)), where.stdout  # not the checkout's
    done = subprocess.run(
        [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *NOBODY, exe, "trace",
         lab.server(), "-p", "tcp/443", "-p", "tcp/80", "-c", "2", "-i", "0.1", "--timeout",
         "1", "-n", "--json", "-"],
        capture_output=True, text=True, timeout=180, check=False, cwd="/",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # tcp/443 is dropped
    assert "tracing with ordinary sockets instead" in done.stderr  # said in one line
    (target,) = json.loads(done.stdout)["targets"]
    states = {f["flow"]: f["verdict"]["state"] for f in target["flows"] if f["flow"] != "icmp"}
    assert states == {"tcp/443": "filtered", "tcp/80": "open"}, states
    assert json.loads(done.stdout)["params"]["transport"] == "unprivileged"
    # Its man pages, where man finds them through the environment's bin on PATH.
    man = shutil.which("man")
    assert man, "man-db is needed (bash scripts/setup installs it)"
    found = subprocess.run(
        [man, "-w", "reachtest-trace"], capture_output=True, text=True, check=False,
        env={"PATH": f"{installed / 'bin'}:/usr/bin:/bin"},
    )  # fmt: skip
    assert found.stdout.strip() == str(installed / "share/man/man1/reachtest-trace.1")
