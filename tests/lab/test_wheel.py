"""Installed as a user installs it (issue 29): pipx installs the source archive built
from this tree (``python -m build``; pipx builds the wheel from it, man pages included)
into a folder of its own outside the checkout, and the installed command traces the lab
as uid 65534 (ordinary sockets); pipx links its man pages where ``man`` finds them, and
the documentation is installed beside them. Run from "/", so nothing of the checkout is
imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Built
from tests.lab.conftest import MakeLab, reachtest_cmd

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@dataclass(frozen=True)
class Pipx:
    """Where pipx put things: the command, the man pages, the environment."""

    bin: Path
    man: Path
    venv: Path


@pytest.fixture
def installed(lab_ready: None, built: Built) -> Iterator[Pipx]:
    """``pipx install`` of the sdist into a folder readable by uid 65534."""
    folder = Path(tempfile.mkdtemp(prefix="reachtest-pipx-"))
    try:
        folder.chmod(0o755)
        where = Pipx(folder / "bin", folder / "man", folder / "home" / "venvs" / "reachtest")
        env = {
            **os.environ,
            "PIPX_HOME": str(folder / "home"),
            "PIPX_BIN_DIR": str(where.bin),
            "PIPX_MAN_DIR": str(where.man),
        }
        done = subprocess.run(
            [sys.executable, "-m", "pipx", "install", "--python", sys.executable,
             str(built.sdist)],
            capture_output=True, text=True, timeout=900, check=False, env=env, cwd="/",
        )  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        for path in folder.rglob("*"):  # pipx keeps its folders to its user
            if path.is_dir() and not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o755)
        yield where
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_pipx_install_traces_the_lab_as_an_ordinary_user(
    installed: Pipx, make_lab: MakeLab
) -> None:
    lab = make_lab("tcp-drop")
    exe = str(installed.bin / "reachtest")
    where = subprocess.run(
        [str(installed.venv / "bin/python"), "-c", "import reachtest; print(reachtest.__file__)"],
        capture_output=True, text=True, cwd="/", check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(installed.venv)), where.stdout  # not the checkout's
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
    # Its man pages, linked by pipx where man finds them, and its documentation.
    man = shutil.which("man")
    assert man, "man-db is needed (bash scripts/setup installs them)"
    found = subprocess.run(
        [man, "-w", "reachtest-trace"], capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "MANPATH": str(installed.man)},
    )  # fmt: skip
    linked = installed.man / "man1" / "reachtest-trace.1"  # pipx links it (man shows the target)
    assert linked.exists(), sorted(p.name for p in installed.man.rglob("*"))
    assert Path(found.stdout.strip()).resolve() == linked.resolve(), found.stderr
    assert (installed.venv / "share/doc/reachtest/trace.md").is_file()
