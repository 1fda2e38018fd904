"""The privilege drop in a child process (it cannot be undone): as root with SUDO_UID
the child ends as that user, no groups, every capability set empty, no_new_privs; as
root itself, uid 0 without capabilities; and the readability check that decides
whether modules are loaded before the switch."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from reachtest.privileges import _reachable, invoking_user

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give it up")
CHILD = """
import json
from reachtest.privileges import drop_privileges
dropped = drop_privileges()
status = dict(l.rstrip("\\n").split(":\\t", 1) for l in open("/proc/self/status") if ":\\t" in l)
import scipy.stats, reachtest.report.terminal  # loaded before the switch, or readable after
print(json.dumps([dropped.uid, dropped.gid, dropped.switched, status]))
"""


def _child(env: dict[str, str]) -> list[object]:
    import json

    base = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=base | env, capture_output=True, text=True,
        cwd="/", check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: list[object] = json.loads(done.stdout)
    return result


@ROOT_ONLY
@pytest.mark.parametrize("sudo", [True, False], ids=["sudo", "root-itself"])
def test_the_process_ends_without_privileges(sudo: bool) -> None:
    env = {"SUDO_UID": "65534", "SUDO_GID": "65534"} if sudo else {}
    uid, gid, switched, status = _child(env)
    assert (uid, gid, switched) == ((65534, 65534, True) if sudo else (0, 0, False))
    assert isinstance(status, dict)
    assert status["Uid"].split() == [str(uid)] * 4 and status["Groups"].strip() == ""
    for key in ("CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"):
        assert int(status[key], 16) == 0, key
    assert status["NoNewPrivs"] == "1"


KEEPING = """
import json, socket
from reachtest.privileges import drop_privileges
dropped = drop_privileges(keep_net_raw=True)
status = dict(l.rstrip("\\n").split(":\\t", 1) for l in open("/proc/self/status") if ":\\t" in l)
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)  # still allowed
sock.close()
try:
    open("/root/.reachtest-probe", "w")  # CAP_DAC_OVERRIDE is gone
    wrote = True
except PermissionError:
    wrote = False
print(json.dumps([dropped.uid, wrote, status]))
"""


@ROOT_ONLY
def test_a_service_keeps_cap_net_raw_and_nothing_else() -> None:
    import json

    base = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    done = subprocess.run(
        [sys.executable, "-c", KEEPING], env=base | {"SUDO_UID": "65534", "SUDO_GID": "65534"},
        capture_output=True, text=True, cwd="/", check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    uid, wrote, status = json.loads(done.stdout)
    assert uid == 65534 and not wrote
    net_raw = 1 << 13
    for key, want in (("CapEff", net_raw), ("CapPrm", net_raw), ("CapBnd", net_raw)):
        assert int(status[key], 16) == want, key
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1"


def test_the_invoking_user_comes_from_sudo_only_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_UID", "1000")
    monkeypatch.setenv("SUDO_GID", "1001")
    want = (1000, 1001) if os.geteuid() == 0 else None
    assert invoking_user() == want
    for bad in ("0", "", "1000x", "-5"):
        monkeypatch.setenv("SUDO_UID", bad)
        assert invoking_user() is None


def test_reachable_follows_mode_bits_up_the_tree() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:  # /tmp: open to others
        _check_reachable(Path(folder))


def _check_reachable(tmp_path: Path) -> None:
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "a", 0o755)
    if not _reachable(str(tmp_path), 65534, 65534):
        pytest.skip("the test folder's own parents are closed to others")
    assert _reachable(str(inner), 65534, 65534)
    os.chmod(tmp_path / "a", 0o700)  # owner only: others cannot pass
    assert not _reachable(str(inner), 65534, 65534)
    me = os.stat(tmp_path / "a")
    assert _reachable(str(inner), me.st_uid, me.st_gid)  # its owner can
    os.chmod(tmp_path / "a", 0o750)
    assert _reachable(str(inner), 12345, me.st_gid)  # its group can
    assert not _reachable(str(tmp_path / "missing"), 65534, 65534)
