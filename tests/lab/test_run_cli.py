"""`reachtest run`, `diff` and `history` as cron and an admin use them, in the lab: a
clean network meets every expectation; after the "firewall change" (the lab switched to
tcp-drop) the run fails naming tcp/443 and the hop, the diff shows open -> filtered and
where it is blocked, the Prometheus file says so, and the history holds both runs.
Overlapping runs and a run killed with SIGKILL leave the history sound."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from reachtest.lab import manager
from reachtest.schedule import metrics
from tests.lab.conftest import Lab, MakeLab, reachtest_cmd

CONFIG = """\
history = "history.sqlite"
reports = "reports"
prometheus = "metrics/reachtest.prom"

[defaults]
services = ["tcp/443", "tcp/80", "udp/53"]
rounds = 4
interval = 0.1
timeout = 0.5
max_ttl = 9

[[target]]
host = "{server}"
name = "web"
expect = {{ icmp = "reachable", "tcp/443" = "open", "tcp/80" = "open", "udp/53" = "open" }}
labels = {{ site = "lab" }}
"""


def write_config(folder: Path, lab: Lab) -> Path:
    path = folder / "reachtest.toml"
    path.write_text(CONFIG.format(server=lab.server()))
    return path


def in_lab(lab: Lab, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def here(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*reachtest_cmd(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def stored_runs(history: Path) -> list[tuple[int, int, str]]:
    with sqlite3.connect(history) as db:
        return db.execute("SELECT id, batch, kind FROM runs ORDER BY id").fetchall()


def test_a_firewall_change_as_in_the_issue(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("clean")
    config = write_config(tmp_path, lab)
    (tmp_path / "metrics").mkdir()
    first = in_lab(lab, "run", "--config", str(config))
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout == "" and first.stderr == ""  # quiet for cron when all is well
    assert len({batch for _, batch, _ in stored_runs(tmp_path / "history.sqlite")}) == 1

    truth = manager.up("tcp-drop", lab_id=lab.lab_id).scenario.truth  # the firewall change
    blocked_after = next(f for f in truth.flows if f.flow.label == "tcp/443").last_hop
    second = in_lab(lab, "run", "--config", str(config))
    assert second.returncode == 1, second.stdout + second.stderr
    failing = [line for line in second.stdout.splitlines() if "expected" in line]
    assert len(failing) == 1, second.stdout
    assert "web" in failing[0] and "tcp/443: expected open, got filtered" in failing[0]
    assert f"silent after hop {blocked_after} " in failing[0]
    assert "web tcp/443: open -> filtered" in second.stdout
    assert list((tmp_path / "reports").glob("*_web.html"))

    diff = here("diff", "--last", "2", "web", "--config", str(config))
    assert diff.returncode == 0, diff.stderr
    line = next(x for x in diff.stdout.splitlines() if "tcp/443" in x and "WORSE" in x)
    assert "open -> filtered" in line and f"silent after hop {blocked_after} " in line
    assert "same     web tcp/80" in diff.stdout
    gate = here("diff", "--last", "2", "web", "--config", str(config), "--fail-on", "regression")
    assert gate.returncode == 1

    got = metrics.parse((tmp_path / "metrics" / "reachtest.prom").read_text())

    def value(name: str, flow: str, **extra: str) -> float:
        protocol, _, port = flow.partition("/")
        labels = {"target": "web", "protocol": protocol, "port": port, "site": "lab", **extra}
        return got[(name, tuple(sorted(labels.items())))]

    assert value("probe_success", "tcp/443") == 0 and value("probe_success", "tcp/80") == 1
    assert value("probe_success", "icmp") == 1
    assert value("reachtest_expectation_met", "tcp/443", expected="open") == 0
    assert value("reachtest_expectation_met", "udp/53", expected="open") == 1
    assert value("reachtest_stop_hop", "tcp/443") == blocked_after  # the hop the words name
    assert value("reachtest_stop_hop", "tcp/80") == 0
    assert value("reachtest_target_hops", "icmp") == truth.server_hop
    assert value("reachtest_loss_ratio", "tcp/443") == 1.0

    history = here("history", "web", "--config", str(config))
    assert history.returncode == 0, history.stderr
    assert history.stdout.startswith("2 runs from")
    https = history.stdout.split("web tcp/443:")[1].split("web tcp/80")[0]
    assert "got through in 50% of 2 runs" in https
    assert [w.strip(",") for w in https.split() if w.strip(",") in ("open", "filtered")] == [
        "filtered",
        "open",
        "filtered",
    ]
    page = here("history", "--config", str(config), "--html", str(tmp_path / "h.html"))
    assert page.returncode == 0 and "<svg" in (tmp_path / "h.html").read_text()


def test_two_runs_at_once_both_finish_or_one_reports_the_lock(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    lab = make_lab("clean")
    config = write_config(tmp_path, lab)
    (tmp_path / "metrics").mkdir()
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    runs = [
        subprocess.Popen(
            [*argv, "run", "--config", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in ((), ())
    ]
    results = [(p.wait(120), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 3]), results
    if codes == [0, 3]:
        message = next(err for code, _, err in results if code == 3)
        assert "another reachtest run holds" in message and "pid" in message
        assert message.count("\n") == 1  # one line, no traceback
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {batch for _, batch, _ in stored_runs(tmp_path / "history.sqlite")}
    assert len(stored) == codes.count(0)
    waited = [
        subprocess.Popen([*argv, "run", "--config", str(config), "--wait", "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    assert [p.wait(180) for p in waited] == [0, 0]  # with --wait, the second waits its turn
    assert len({b for _, b, _ in stored_runs(tmp_path / "history.sqlite")}) == len(stored) + 2


def test_a_run_killed_mid_way_loses_only_itself(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab("clean")
    config = write_config(tmp_path, lab)
    (tmp_path / "metrics").mkdir()
    assert in_lab(lab, "run", "--config", str(config)).returncode == 0
    history = tmp_path / "history.sqlite"
    before = stored_runs(history)
    long = tmp_path / "long.toml"  # the same history; a trace of 400 rounds, always
    long.write_text(
        config.read_text().replace("rounds = 4", "rounds = 400") + 'policy = "always"\n'
    )
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    victim = subprocess.Popen(
        [*argv, "run", "--config", str(long)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(4)  # the check is done; the long trace is running
        assert victim.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    assert stored_runs(history) == before
    with sqlite3.connect(history) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    after = in_lab(lab, "run", "--config", str(config))  # the lock died with its holder
    assert after.returncode == 0, after.stderr
    assert len(stored_runs(history)) == len(before) + 1


def _long_config(config: Path) -> Path:
    """The same history, reports and metrics; a trace of 400 rounds, always."""
    long = config.with_name("long.toml")
    long.write_text(
        config.read_text().replace("rounds = 4", "rounds = 400") + 'policy = "always"\n'
    )
    return long


def _start(lab: Lab, config: Path) -> subprocess.Popen[str]:
    argv = [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd()]
    return subprocess.Popen(
        [*argv, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _after_a_first_run(make_lab: MakeLab, tmp_path: Path) -> tuple[Lab, Path, Path, Path]:
    """A clean lab and one stored run: (lab, config, history, metrics file)."""
    lab = make_lab("clean")
    config = write_config(tmp_path, lab)
    (tmp_path / "metrics").mkdir()
    assert in_lab(lab, "run", "--config", str(config)).returncode == 0
    return lab, config, tmp_path / "history.sqlite", tmp_path / "metrics" / "reachtest.prom"


def test_an_interrupt_before_the_writes_stores_nothing(make_lab: MakeLab, tmp_path: Path) -> None:
    lab, config, history, prom = _after_a_first_run(make_lab, tmp_path)
    before, metrics_before = stored_runs(history), prom.read_bytes()
    reports = sorted((tmp_path / "reports").iterdir())
    for sig in (signal.SIGINT, signal.SIGTERM):
        victim = _start(lab, _long_config(config))
        try:
            time.sleep(4)  # the check is done; the long trace is running
            assert victim.poll() is None, "the run ended before it could be interrupted"
            victim.send_signal(sig)
            _, err = victim.communicate(timeout=30)
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait(10)
        assert victim.returncode == 130, err
        assert err == "reachtest: error: interrupted before the run was stored: nothing written\n"
        assert stored_runs(history) == before
        assert prom.read_bytes() == metrics_before
        assert sorted((tmp_path / "reports").iterdir()) == reports
        assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["reachtest.prom"]


def test_an_interrupt_during_the_writes_lets_them_finish_and_says_so(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    lab = make_lab("clean")
    config = write_config(tmp_path, lab)
    (tmp_path / "metrics").mkdir()
    assert in_lab(lab, "run", "--config", str(config)).returncode == 0
    history, prom = tmp_path / "history.sqlite", tmp_path / "metrics" / "reachtest.prom"
    before = stored_runs(history)
    quick = config.with_name("always.toml")  # a short run that traces, so it saves reports
    quick.write_text(config.read_text() + 'policy = "always"\n')
    saved = len(list((tmp_path / "reports").glob("*.json")))
    victim = _start(lab, quick)
    try:
        deadline = time.monotonic() + 60
        while len(list((tmp_path / "reports").glob("*.json"))) == saved:
            assert time.monotonic() < deadline, "no report written"
            assert victim.poll() is None, victim.communicate()
            time.sleep(0.005)
        victim.send_signal(signal.SIGINT)  # the JSON is written; HTML, Markdown, batch to come
        _, err = victim.communicate(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
    assert victim.returncode == 130, err
    after = stored_runs(history)
    assert len({b for _, b, _ in after}) == len({b for _, b, _ in before}) + 1
    batch = max(b for _, b, _ in after)
    assert err == (
        f"reachtest: error: interrupted (SIGINT) after the run was stored (run {batch} in "
        f"{history}; 3 report files, metrics written)\n"
    )
    assert len(list((tmp_path / "reports").iterdir())) == 3 * (saved + 1)
    assert metrics.parse(prom.read_text())  # whole
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["reachtest.prom"]


def test_a_locked_history_is_waited_for_within_a_bound_that_ctrl_c_ends_at_once(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """Another process holds the history's write lock: the run writes no report while it
    waits, stops at once on Ctrl-C (exit 130) and gives up after 30 s (exit 3), nothing
    written either way (issue: reports written, no batch stored, Ctrl-C ignored ~30 s)."""
    lab, config, history, prom = _after_a_first_run(make_lab, tmp_path)
    before, metrics_before = stored_runs(history), prom.read_bytes()
    reports = sorted((tmp_path / "reports").iterdir())
    quick = config.with_name("always.toml")  # a run that traces, so it would save reports
    quick.write_text(config.read_text() + 'policy = "always"\n')
    blocker = sqlite3.connect(history, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the history's write lock
        for interrupt in (True, False):
            victim = _start(lab, quick)
            try:
                line = victim.stderr.readline() if victim.stderr else ""  # type: ignore[union-attr]
                assert line.startswith(f"reachtest: waiting for the history {history}"), line
                began = time.monotonic()
                if interrupt:
                    victim.send_signal(signal.SIGINT)
                _, err = victim.communicate(timeout=60)
                took = time.monotonic() - began
            finally:
                if victim.poll() is None:
                    victim.kill()
                    victim.wait(10)
            if interrupt:
                assert victim.returncode == 130 and took < 2, (took, err)
                assert err == (
                    "reachtest: error: interrupted before the run was stored: nothing written\n"
                )
            else:
                assert victim.returncode == 3, err
                assert err.startswith(f"reachtest: error: history {history} is locked by")
                assert err.count("\n") == 1
            assert stored_runs(history) == before
            assert sorted((tmp_path / "reports").iterdir()) == reports
            assert prom.read_bytes() == metrics_before
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_two_names_of_one_address_are_traced_once_and_stored_under_their_own_names(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    """A name and an address of the same server (config check cannot know): the second
    is not traced again but said to be the first's address; the run stores its batch
    (issue: a UNIQUE constraint, exit 4, nothing stored, reports under the other name)."""
    lab = make_lab("clean")
    config = tmp_path / "two.toml"
    config.write_text(
        'history = "history.sqlite"\nreports = "reports"\n[defaults]\n'
        'services = ["tcp/80"]\nrounds = 2\ninterval = 0.1\ntimeout = 0.5\n'
        'policy = "always"\n'
        f'[[target]]\nhost = "server"\nname = "byname"\nfamily = 4\n'
        f'[[target]]\nhost = "{lab.server()}"\nname = "byaddress"\n'
    )
    assert here("config", "check", str(config)).returncode == 0
    done = in_lab(lab, "run", "--config", str(config), "-v")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "byaddress: not resolved, nothing sent" in done.stdout
    assert "the address of target 'byname'" in done.stdout
    assert len({b for _, b, _ in stored_runs(tmp_path / "history.sqlite")}) == 1
    names = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "reports").iterdir())
    assert names == ["byname.html", "byname.json", "byname.md"]


UNRESOLVED_CONFIG = """\
history = "history.sqlite"
prometheus = "reachtest.prom"

[[target]]
host = "{host}"
name = "dns"
services = ["tcp/443"]
rounds = 2
interval = 0.1
timeout = 0.5
expect = {{ "tcp/443" = "open" }}
"""


def test_a_target_that_does_not_resolve_is_recorded_compared_and_exported(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    lab = make_lab("clean")
    config = tmp_path / "dns.toml"
    config.write_text(UNRESOLVED_CONFIG.format(host=lab.server()))
    assert in_lab(lab, "run", "--config", str(config)).returncode == 0
    config.write_text(UNRESOLVED_CONFIG.format(host="nothing-here.invalid"))
    for _ in range(2):
        failed = in_lab(lab, "run", "--config", str(config))
        assert failed.returncode == 1, failed.stderr
    assert "1 not resolved" in failed.stdout.splitlines()[0]
    assert "dns tcp/443: expected open, got unresolved (unknown host" in failed.stdout
    history = here("history", "dns", "--config", str(config))
    assert history.returncode == 0, history.stderr
    assert history.stdout.startswith("3 runs from")
    assert "unresolved" in history.stdout and "got through in 33% of 3 runs" in history.stdout
    diff = here("diff", "--last", "3", "dns", "--config", str(config))
    assert diff.returncode == 0, diff.stderr
    line = next(x for x in diff.stdout.splitlines() if "tcp/443" in x)
    assert "WORSE" in line and "open -> unresolved" in line
    same = here("diff", "--last", "2", "dns", "--config", str(config), "--fail-on", "change")
    assert same.returncode == 0, same.stdout
    got = metrics.parse((tmp_path / "reachtest.prom").read_text())
    assert got[("reachtest_resolved", (("target", "dns"),))] == 0
    labels = (("port", "443"), ("protocol", "tcp"), ("target", "dns"))
    assert got[("probe_success", labels)] == 0
