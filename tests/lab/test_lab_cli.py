"""`reachtest lab ...` as a new user runs it: real processes, real namespaces, exit codes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from reachtest.lab import manager, netns
from tests.lab import netprobe
from tests.lab.conftest import new_lab_id, reachtest_cmd


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*reachtest_cmd(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def lab_id(lab_ready: None) -> Iterator[str]:
    one = new_lab_id()
    try:
        yield one
    finally:
        manager.down(one)


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("reachtest: error: ")
    return lines[0]


def test_acceptance_tcp_drop_up_status_ping_connect_down(lab_id: str) -> None:
    up = run("lab", "up", "tcp-drop", "--name", lab_id)
    assert up.returncode == 0, up.stderr
    assert "198.18.6.2" in up.stdout

    status = run("lab", "status", "--name", lab_id)
    assert status.returncode == 0, status.stderr
    for text in ("r3 drops tcp/443", "198.18.3.2/24", "2001:db8:0:6::2/64", "running", "tcp/443"):
        assert text in status.stdout, text

    ping = run("lab", "exec", "--name", lab_id, "--", "ping", "-c1", "-W2", "server")
    assert ping.returncode == 0, ping.stdout + ping.stderr

    def connect(port: int) -> int:
        script = f"exec 3<>/dev/tcp/198.18.6.2/{port}"
        done = run("lab", "exec", "--name", lab_id, "--", "timeout", "2", "bash", "-c", script)
        return done.returncode

    assert connect(80) == 0, "tcp/80 passes"
    assert connect(443) == 124, "tcp/443 is dropped: the connect times out"

    down = run("lab", "down", "--name", lab_id)
    assert down.returncode == 0, down.stderr
    assert not [n for n in netns.list_netns() if n.startswith(f"rt-{lab_id}-")]
    assert manager.read_state(lab_id) is None


def test_unknown_scenario_is_a_one_line_usage_error(lab_id: str) -> None:
    done = run("lab", "up", "no-such-scenario", "--name", lab_id)
    assert done.returncode == 2
    assert "no scenario 'no-such-scenario'" in one_line_error(done)
    assert not [n for n in netns.list_netns() if n.startswith(f"rt-{lab_id}-")]


def test_without_privileges_up_is_refused_with_exit_3(lab_id: str) -> None:
    # Root with an empty capability bounding set: what a non-root user has.
    done = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-all",
            "--inh-caps=-all",
            *reachtest_cmd(),
            "lab",
            "up",
            "clean",
            "--name",
            lab_id,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert "needs root" in one_line_error(done)


def test_exec_and_status_of_a_lab_that_is_not_up_exit_3(lab_id: str) -> None:
    for args in (("exec", "--name", lab_id, "--", "true"), ("status", "--name", lab_id)):
        done = run("lab", *args)
        assert done.returncode == 3
        assert "is not up" in one_line_error(done)


def test_exec_returns_the_commands_exit_code(lab_id: str) -> None:
    assert run("lab", "up", "clean", "--hops", "1", "--name", lab_id).returncode == 0
    assert run("lab", "exec", "--name", lab_id, "--", "sh", "-c", "exit 7").returncode == 7
    where = run("lab", "exec", "--name", lab_id, "--node", "server", "--", "ip", "-brief", "addr")
    assert "198.18.2.2/24" in where.stdout


def test_up_replaces_an_existing_lab_of_the_same_name(lab_id: str) -> None:
    assert run("lab", "up", "clean", "--name", lab_id).returncode == 0
    first = manager.read_state(lab_id)
    assert first is not None
    assert run("lab", "up", "udp-drop", "--hops", "3", "--name", lab_id).returncode == 0
    second = manager.read_state(lab_id)
    assert second is not None and second.scenario == "udp-drop"
    spaces = [n for n in netns.list_netns() if n.startswith(f"rt-{lab_id}-")]
    assert len(spaces) == 5, spaces  # client, r1..r3, server: the 5-hop lab is gone
    for pid in first.pids.values():
        assert not manager._is_our_service(pid, lab_id), "old services were stopped"


def test_down_cleans_up_after_a_partial_up(lab_id: str) -> None:
    # What a crash in the middle of `up` leaves: some namespaces, an /etc/netns folder,
    # a state file that is not complete.
    netns.add_netns([f"rt-{lab_id}-client", f"rt-{lab_id}-r1"])
    (netns.ETC_NETNS_DIR / f"rt-{lab_id}-client").mkdir(parents=True, exist_ok=True)
    manager.state_dir(lab_id).mkdir(parents=True, exist_ok=True)
    (manager.state_dir(lab_id) / "state.json").write_text("{not json")
    done = run("lab", "down", "--name", lab_id)
    assert done.returncode == 0, done.stderr
    assert not [n for n in netns.list_netns() if n.startswith(f"rt-{lab_id}-")]
    assert not (netns.ETC_NETNS_DIR / f"rt-{lab_id}-client").exists()
    assert not manager.state_dir(lab_id).exists()


def test_list_names_every_scenario() -> None:
    from reachtest.lab.scenarios import SCENARIOS

    done = run("lab", "list")
    assert done.returncode == 0
    for name in SCENARIOS:
        assert name in done.stdout


def test_added_rules_take_effect_and_survive_in_status(lab_id: str) -> None:
    up = run(
        "lab",
        "up",
        "clean",
        "--name",
        lab_id,
        "--rule",
        "r2:port-unreachable:udp/123",
        "--rule",
        "r4:silent",
    )
    assert up.returncode == 0, up.stderr
    assert "added rule r2:port-unreachable:udp/123" in up.stdout
    status = run("lab", "status", "--name", lab_id)
    assert "r2 rejects (port-unreachable) udp/123" in status.stdout
    assert "does not cover the added rules" in status.stdout
    plan = manager.read_state(lab_id)
    assert plan is not None
    lab = plan.plan()
    server = str(lab.topology.server_address())
    with netns.entered(lab.topology.netns("client")):
        rejected = netprobe.udp_probe(server, 123, netprobe.ntp_request(), ttl=64)
        silent = netprobe.echo_probe(server, ttl=4, timeout_s=0.3)
        after = netprobe.echo_probe(server, ttl=5)
    assert rejected == netprobe.Answer("port-unreachable", "198.18.2.2")
    assert silent == netprobe.TIMEOUT
    assert after == netprobe.Answer("time-exceeded", "198.18.5.2")


def test_bad_rule_is_a_one_line_usage_error(lab_id: str) -> None:
    done = run("lab", "up", "clean", "--name", lab_id, "--rule", "r2:explode")
    assert done.returncode == 2
    assert "bad --rule 'r2:explode'" in one_line_error(done)
