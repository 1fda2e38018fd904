"""Least privilege with real packets: `sudo reachtest trace` opens its sockets as root,
then traces to the end as the invoking user (SUDO_UID/SUDO_GID) with no capability
and no_new_privs, and the files it writes are that user's; run by root itself it stays
uid 0 but without capabilities. Read from /proc/PID/status of the running trace."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from reachtest.report.record import validate_record
from tests.lab.conftest import Lab, MakeLab, reachtest_cmd

NOBODY = 65534


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def _find_trace(marker: str, deadline: float) -> int:
    """The pid of the reachtest trace process whose command line holds ``marker``."""
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    argv = cmdline.read().split(b"\0")
            except OSError:
                continue
            if b"trace" in argv and marker.encode() in argv and b"exec" not in argv:
                return int(entry)
        time.sleep(0.02)
    raise AssertionError(f"no running trace with {marker}")


@pytest.mark.parametrize("sudo", [True, False], ids=["sudo", "root-itself"])
def test_a_trace_runs_as_the_invoking_user_without_capabilities(
    make_lab: MakeLab, sudo: bool
) -> None:
    lab = make_lab("tcp-drop")
    with tempfile.TemporaryDirectory(dir="/tmp") as where:  # /tmp: others may pass
        _trace_as(lab, Path(where), sudo)


def _trace_as(lab: Lab, tmp_path: Path, sudo: bool) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    uid = NOBODY if sudo else 0
    os.chmod(tmp_path, 0o755)
    os.chown(folder, uid, uid)
    record = folder / "run.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    if sudo:
        env |= {"SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), "SUDO_USER": "nobody"}
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    child = subprocess.Popen(
        [*argv, "trace", "server", "-p", "tcp/443", "-p", "tcp/80", "-c", "25", "-i", "0.1",
         "--report", "--json", str(record), "--csv", str(folder / "run.csv"),
         "--html", str(folder / "run.html"), "--pcap", str(folder / "run.pcap")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pid = _find_trace(str(record), time.monotonic() + 20)
        seen: list[tuple[float, dict[str, str]]] = []
        while child.poll() is None:  # sampled while it runs, to the end
            try:
                seen.append((time.time(), _status(pid)))
            except OSError:
                break
            time.sleep(0.05)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 1, err  # tcp/443 is dropped
    # Every sample from the moment the run started (after the sockets were opened and
    # privileges given up, before the first probe) to its end.
    started = datetime.fromisoformat(json.loads(record.read_text())["started"]).timestamp()
    probing = [status for at, status in seen if at >= started]
    assert len(probing) >= 20, f"only {len(probing)} samples while it traced"
    for status in probing:
        assert status["Uid"].split() == [str(uid)] * 4
        assert status["Gid"].split() == [str(uid)] * 4
        assert status["Groups"].strip() == ""
        caps = {k: status[k] for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd")}
        assert all(int(v, 16) == 0 for v in caps.values()), caps
        assert status["NoNewPrivs"] == "1"
    for path in (record, folder / "run.csv", folder / "run.html", folder / "run.pcap"):
        assert path.stat().st_uid == uid and path.stat().st_gid == uid, path
    validate_record(json.loads(record.read_text()))
    assert "tcp/443" in out and "silently dropped" in out


def test_an_output_the_user_may_not_write_is_refused_before_any_probe(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """Root could write there; the user it becomes cannot: one line, exit 2, checked
    again after the switch and before the first probe (nothing is lost after a run)."""
    lab = make_lab("clean")
    closed = tmp_path / "root-only"
    closed.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    env |= {"SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY)}
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    done = subprocess.run(
        [*argv, "trace", "server", "-p", "tcp/80", "-c", "3", "--json", str(closed / "r.json")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "cannot write the JSON record" in done.stderr
    assert "Permission denied" in done.stderr or "permission denied" in done.stderr
    assert not list(closed.iterdir())
