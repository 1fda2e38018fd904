"""Least privilege with real packets: `sudo reachtest trace` opens its sockets as root,
then traces to the end as the invoking user (SUDO_UID/SUDO_GID) with no capability
and no_new_privs, and the files it writes are that user's; run by root itself it stays
uid 0 but without capabilities. Read from /proc/PID/status of the running trace."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from reachtest.report.record import validate_record
from tests.lab.conftest import MakeLab, reachtest_cmd

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
    make_lab: MakeLab, tmp_path: Path, sudo: bool
) -> None:
    lab = make_lab("tcp-drop")
    folder = tmp_path / "out"
    folder.mkdir()
    uid = NOBODY if sudo else 0
    os.chown(folder, uid, uid)
    record = folder / "run.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    if sudo:
        env |= {"SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), "SUDO_USER": "nobody"}
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    child = subprocess.Popen(
        [*argv, "trace", "server", "-p", "tcp/443", "-p", "tcp/80", "-c", "25", "-i", "0.1",
         "--report", "--json", str(record), "--csv", str(folder / "run.csv")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pid = _find_trace(str(record), time.monotonic() + 20)
        seen = []
        while child.poll() is None:  # sampled while it probes, to the end
            try:
                seen.append(_status(pid))
            except OSError:
                break
            time.sleep(0.2)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 1, err  # tcp/443 is dropped
    assert len(seen) >= 5, "the trace ended before it could be watched"
    for status in seen[1:]:  # the first sample may precede the switch
        assert status["Uid"].split() == [str(uid)] * 4
        assert status["Gid"].split() == [str(uid)] * 4
        assert status["Groups"].strip() == ""
        assert all(int(status[k], 16) == 0 for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd"))
        assert status["NoNewPrivs"] == "1"
    for path in (record, folder / "run.csv"):
        assert path.stat().st_uid == uid and path.stat().st_gid == uid, path
    validate_record(json.loads(record.read_text()))
    assert "tcp/443" in out and "silently dropped" in out
