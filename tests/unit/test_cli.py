"""The CLI's contract: fast help, version, one-line errors with documented exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

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
        (["probe", "198.18.6.2", "-p", "tcp/0"], 2, "a port is 1..65535, not 0"),
        (["probe", "198.18.6.2", "-p", "udp/70000"], 2, "a port is 1..65535, not 70000"),
        (["probe", "198.18.6.2", "-p", "sctp/5"], 2, "the protocol is icmp, tcp or udp"),
        (["probe", "198.18.6.2", "-p", "tcp/nope"], 2, "neither a port number nor a service"),
        (["probe", "198.18.6.2", "-m", "0"], 2, "max TTL must be"),
        (["probe", "198.18.6.2", "-f", "9", "-m", "3"], 2, "max TTL must be 9..255"),
        (["probe", "198.18.6.2", "-i", "-1"], 2, "interval must be 0..86400 seconds"),
        (["probe", "198.18.6.2", "--timeout", "0"], 2, "timeout must be positive"),
        (["probe", "198.18.6.2", "--payload", "zz"], 2, "--payload must be hex"),
        (["probe", "198.18.6.2", "--no-icmp"], 2, "nothing to trace"),
        (["trace", "198.18.6.2", "-p", "tcp/0"], 2, "a port is 1..65535, not 0"),
        (["trace", "198.18.6.2", "-p", "70000"], 2, "a port is 1..65535, not 70000"),
        (["trace", "198.18.6.2", "-p", "http,ftp,nonsense"], 2, "'nonsense' is neither"),
        (["trace", "198.18.6.2", "-p", "tcp/1-100"], 2, "at most 64 per run"),
        (["trace", "198.18.6.2", "-m", "0"], 2, "max TTL must be"),
        (["trace", "198.18.6.2", "-i", "-0.5"], 2, "interval must be 0..86400 seconds"),
        (["trace", "198.18.6.2", "-i", "nan"], 2, "interval must be a finite number"),
        (["trace", "198.18.6.2", "-i", "inf"], 2, "interval must be a finite number"),
        (["trace", "198.18.6.2", "-i", "1e300"], 2, "interval must be 0..86400 seconds"),
        (["trace", "198.18.6.2", "--timeout", "nan"], 2, "timeout must be a finite number"),
        (["trace", "198.18.6.2", "--rate", "nan"], 2, "rate must be a finite number"),
        (["probe", "198.18.6.2", "--rate", "inf"], 2, "rate must be a finite number"),
        (["trace", "198.18.6.2", "-c", "99999999999999999999"], 2, "rounds must be 1..1000000000"),
        (["demo", "-i", "nan"], 2, "interval must be a finite number"),
        (["trace", "198.18.6.2", "-c", "0"], 2, "rounds must be"),
        (["trace", "198.18.6.2", "--timeout", "-1"], 2, "timeout must be positive"),
        (["trace", "198.18.6.2", "--no-icmp"], 2, "nothing to trace"),
        (["trace"], 2, "no host to trace"),
        (["trace", "-F", "/nonexistent/hosts"], 2, "cannot read host file"),
        (["trace", "198.18.6.2", "--json", "/nonexistent/dir/run.json"], 2, "no directory"),
        (["trace", "198.18.6.2", "--csv", "/"], 2, "it is a directory"),
        (["trace", "198.18.6.2", "--json", "-", "--csv", "-"], 2, "cannot both write"),
        (["trace", "2001:db8::1", "-4"], 2, "is not an IPv4 address"),
        (["show", "/nonexistent/run.json"], 2, "cannot read run record"),
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


def _unprivileged(argv: list[str]) -> list[str]:
    """``argv`` without CAP_NET_RAW: as root, every capability dropped by setpriv."""
    import os
    import shutil

    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop capabilities as root")
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all", *argv]


def test_without_raw_socket_rights_it_says_so_and_traces_with_ordinary_sockets() -> None:
    """In a network namespace of its own (only its loopback, brought up): probe falls
    back to ordinary sockets in one line naming CAP_NET_RAW, and its UDP probe to a
    closed port of 127.0.0.1 meets the kernel's port unreachable at TTL 1."""
    import json
    import shutil

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is needed for a private network namespace")
    probe = _unprivileged(
        [sys.executable, "-m", "reachtest", "probe", "127.0.0.1", "--no-icmp", "-p", "udp/9",
         "-c", "1", "-m", "1", "--timeout", "0.5"]
    )  # fmt: skip
    script = 'ip link set lo up && exec "$@"'
    done = subprocess.run(
        [unshare, "--net", "sh", "-c", script, "sh", *probe],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("reachtest: note:")]
    assert len(notes) == 1 and "CAP_NET_RAW" in notes[0] and "ordinary sockets" in notes[0]
    (line,) = done.stdout.splitlines()
    outcome = json.loads(line)
    assert (outcome["flow"], outcome["ttl"], outcome["kind"]) == ("udp/9", 1, "port-unreachable")


def test_trace_without_raw_socket_rights_and_a_pcap_is_exit_3_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """A pcap needs raw sockets: no fallback then; one line, exit 3, no file."""
    out = tmp_path / "run.json"
    argv = [sys.executable, "-m", "reachtest", "trace", "127.0.0.1", "-n", "-c", "1"]
    done = subprocess.run(
        _unprivileged([*argv, "--json", str(out), "--pcap", str(tmp_path / "p.pcap")]),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "CAP_NET_RAW" in done.stderr
    assert "--pcap needs raw sockets" in done.stderr
    assert done.stdout == "" and not out.exists() and list(tmp_path.iterdir()) == []


def test_trace_help_documents_the_exit_codes_and_port_spellings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["trace", "--help"]) == 0
    text = capsys.readouterr().out
    for needed in ("Exit codes:", "every traced service is open", "https", "--report-cycles"):
        assert needed in text


def _saved(tmp_path: Path, **options: object) -> Path:
    from reachtest.report.record import dumps
    from tests.unit.report.conftest import sim_record

    path = tmp_path / "run.json"
    path.write_text(dumps(sim_record(**options)))  # type: ignore[arg-type]
    return path


def test_show_prints_the_report_and_the_runs_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.report.conftest import router

    ok = _saved(tmp_path)
    assert main(["show", str(ok)]) == 0
    out = capsys.readouterr().out
    assert "reachable at hop 6" in out and "Verdicts" in out and "\x1b[" not in out
    blocked = _saved(tmp_path, special={3: router(3, drop=frozenset({"tcp/443"}))})
    assert main(["show", str(blocked)]) == 1
    assert "silently dropped after hop 3" in capsys.readouterr().out


def test_show_writes_csv_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(_saved(tmp_path)), "--csv", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("target,address,flow,") and "Verdicts" not in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ('{"schema_version": 1}', "not a reachtest run record: at the top level"),
        ('{"schema_version": 7}', "schema_version 7 is not supported"),
        ("[]", "not a reachtest run record"),
    ],
)
def test_show_refuses_what_is_no_run_record(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_written_files_are_whole_and_exclusive_ones_never_replace(tmp_path: Path) -> None:
    from reachtest.cli import write_file

    first = write_file(tmp_path / "r" / "a.json", "one")
    assert first.read_text() == "one"
    assert write_file(tmp_path / "r" / "a.json", "two") == first and first.read_text() == "two"
    second = write_file(tmp_path / "r" / "a.json", "three", exclusive=True)
    third = write_file(tmp_path / "r" / "a.json", "four", exclusive=True)
    assert (second.name, third.name) == ("a-2.json", "a-3.json")
    assert first.read_text() == "two" and third.read_text() == "four"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["a-2.json", "a-3.json", "a.json"]


def test_show_writes_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = _saved(tmp_path)
    assert main(["show", str(saved), "--markdown", "-"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# reachtest report") and "| TTL | host |" in out
    target = tmp_path / "report.md"
    assert main(["show", str(saved), "--markdown", str(target)]) == 0
    assert target.read_text() == out
    assert main(["show", str(saved), "--markdown", "-", "--csv", "-"]) == 2
    assert "--csv - and --markdown - cannot both write" in capsys.readouterr().err


def test_show_format_html_prints_or_writes_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = _saved(tmp_path)
    assert main(["show", str(saved), "--format", "html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and '<table class="matrix">' in page
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    assert main(["show", str(saved), "--format", "html", "-o", str(target)]) == 0
    assert target.read_text() == page
    assert f"wrote {target}" in capsys.readouterr().err
    assert main(["show", str(saved), "--format", "html", "--markdown", "-"]) == 2
    assert "--format html already writes to stdout" in capsys.readouterr().err
    assert main(["show", str(saved), "--format", "pdf"]) == 2
    assert main(["show", str(saved), "--html", str(tmp_path)]) == 2
    assert "it is a directory" in capsys.readouterr().err


def test_save_reports_writes_json_html_markdown_under_one_new_name(tmp_path: Path) -> None:
    from reachtest.cli import save_reports
    from reachtest.report.record import load_record

    saved = _saved(tmp_path)
    record = load_record(str(saved))
    first = save_reports(record, str(tmp_path / "reports"))
    second = save_reports(record, str(tmp_path / "reports"))
    assert [p.name for p in first] == [
        "20261121T100000Z_server.json", "20261121T100000Z_server.html",
        "20261121T100000Z_server.md",
    ]  # fmt: skip
    assert [p.name for p in second] == [n.name.replace("_server", "_server-2") for n in first]
    assert load_record(str(second[0])) == record
    assert first[1].read_text().startswith("<!DOCTYPE html>")
    assert first[2].read_text().startswith("# reachtest report")


def test_saved_reports_of_an_address_keep_the_whole_address(tmp_path: Path) -> None:
    from reachtest.cli import save_reports
    from reachtest.report.record import load_record

    record = load_record(str(_saved(tmp_path)))
    record["targets"][0]["host"] = "198.18.6.2"
    names = [p.name for p in save_reports(record, str(tmp_path / "reports"))]
    assert names == [f"20261121T100000Z_198.18.6.2.{s}" for s in ("json", "html", "md")]


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import os

    from reachtest.cli import write_file

    old = os.umask(0o022)
    try:
        written = write_file(tmp_path / "report.html", "<p>x</p>")
        saved = write_file(tmp_path / "report.html", "<p>y</p>", exclusive=True)
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o644  # readable by whom the report is for
    assert saved.stat().st_mode & 0o777 == 0o644


def test_demo_without_lab_rights_is_exit_3_before_anything(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    argv = [sys.executable, "-m", "reachtest", "demo", "--out-dir", str(out)]
    done = subprocess.run(_unprivileged(argv), capture_output=True, text=True, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "needs root" in done.stderr
    assert done.stdout == "" and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "0"], "rounds"),
        (["-i", "-1"], "interval"),
        (["--out-dir", "/proc/version"], "not a directory"),
    ],
)
def test_demo_refuses_bad_options_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


# -- run, diff, history -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[[target]]\nhost = "198.18.6.2"\nport = 443\n', ":3: target[1].port: unknown key"),
        ('[[target]]\nhost = "h"\nservices = ["tcp/99999"]\n', ":3: target[1].services:"),
        ('[[target]]\nhost = "h"\nexpect = { "tcp/443" = "opne" }\n',
         ':3: target[1].expect."tcp/443"'),
    ],
)  # fmt: skip
def test_run_with_a_bad_config_is_one_line_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reachtest: error: {config}{where}") and err.count("\n") == 1
    assert not list(tmp_path.glob("*.lock"))  # nothing done before the config was read


def test_run_with_a_missing_config_and_a_bad_wait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err
    for wait in ("-1", "nan", "inf", "1e9"):
        assert main(["run", "--config", str(tmp_path / "nope.toml"), "--wait", wait]) == 2
        assert f"--wait must be 0 to 86400 seconds, not {wait.lstrip('+')}" in (
            capsys.readouterr().err.replace("1e+09", "1e9")
        )


def test_diff_of_two_files_and_its_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.report.conftest import router, sim_record

    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(sim_record()))
    after.write_text(json.dumps(sim_record({3: router(3, drop=frozenset({"tcp/443"}))})))
    assert main(["diff", str(before), str(after)]) == 0
    out = capsys.readouterr().out
    assert "WORSE    server tcp/443   open -> filtered" in out
    assert main(["diff", str(before), str(after), "--fail-on", "regression"]) == 1
    assert main(["diff", str(after), str(before), "--fail-on", "regression"]) == 0
    assert main(["diff", str(before), str(before), "--fail-on", "change"]) == 0
    capsys.readouterr()
    assert main(["diff", str(before), str(after), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["regressions"] == 1
    page = tmp_path / "diff.html"
    assert main(["diff", str(before), str(after), "--format", "html", "-o", str(page)]) == 0
    assert page.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diff", "only.json"], "give two runs to compare"),
        (["diff", "--last", "1", "web", "--history", "h.sqlite"], "--last needs at least 2"),
        (["diff", "--last", "2", "web"], "which history?"),
        (["diff", "3", "4", "--history", "missing.sqlite"], "no history at missing.sqlite"),
        (["history", "--history", "missing.sqlite"], "no history at missing.sqlite"),
        (["history"], "which history?"),
        (["history", "--history", "x", "--since", "soon"], "--since takes a date"),
    ],
)
def test_diff_and_history_errors_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_text("")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_history_shows_changes_per_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reachtest.history.store import HistoryStore
    from tests.unit.report.conftest import router, sim_record

    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as store:
        store.add_run(sim_record())
        store.add_run(sim_record({3: router(3, drop=frozenset({"tcp/443"}))}))
    assert main(["history", "server", "--history", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs from")
    assert "server tcp/443: now filtered, got through in 50% of 2 runs" in out
    assert "filtered      no-response; silent after hop 3 (198.18.3.2)  (run 2)" in out
    assert main(["history", "elsewhere", "--history", str(path)]) == 2
    assert "no runs of 'elsewhere'" in capsys.readouterr().err
    assert main(["diff", "1", "2", "--history", str(path)]) == 0
    assert "open -> filtered" in capsys.readouterr().out


def _record_file(tmp_path: Path, name: str = "a.json") -> Path:
    source = Path(__file__).parents[2] / "reports" / "example" / "combo.json"
    path = tmp_path / name
    path.write_bytes(source.read_bytes())
    return path


def test_outputs_never_replace_an_input_each_other_or_what_is_no_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _record_file(tmp_path), _record_file(tmp_path, "b.json")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(a)
    cases = [
        (["show", str(a), "--csv", str(tmp_path / "x"), "-o", str(tmp_path / "x")], "same file"),
        (["show", str(a), "-o", str(a)], "it is the run record read"),
        (["diff", str(a), str(b), "-o", str(b)], f"it is the run record {b}"),
        (["show", str(a), "-o", str(fifo)], "not a regular file, left as it is"),
        (["show", str(a), "-o", str(link)], "a symbolic link, left as it is"),
    ]
    if os.geteuid() == 0:  # a real character device, made where only this test sees it
        device = tmp_path / "null"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        cases.append((["show", str(a), "--format", "json", "-o", str(device)], "not a regular"))
    before = {p: p.read_bytes() for p in (a, b)}
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert {p: p.read_bytes() for p in (a, b)} == before
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    if os.geteuid() == 0:
        assert stat.S_ISCHR((tmp_path / "null").lstat().st_mode)
    assert not (tmp_path / "x").exists()


def test_the_metrics_never_replace_the_history_or_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for metrics, what in (("h.sqlite", "it is the history"), ("c.toml", "it is the configuration")):
        config = tmp_path / "c.toml"
        text = f'history = "h.sqlite"\nprometheus = "{metrics}"\n[[target]]\nhost = "198.18.6.2"\n'
        config.write_text(text)
        assert main(["run", "--config", str(config)]) == 2
        assert what in capsys.readouterr().err
        assert config.read_text() == text and not (tmp_path / "h.sqlite").exists()


def test_outputs_that_cannot_be_written_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """A full device, a closed stdout, a folder that takes no new file, a date before the
    year 1: the user's situation, not a bug (these were exit 4)."""
    record = _record_file(tmp_path)
    cli = [sys.executable, "-m", "reachtest"]
    with open("/dev/full", "w") as full:
        done = subprocess.run([*cli, "show", str(record)], stdout=full, stderr=subprocess.PIPE,
                              text=True, check=False)  # fmt: skip
    assert done.returncode == 2 and done.stderr == (
        "reachtest: error: cannot write the output: No space left on device\n"
    )
    closed = subprocess.run(
        f"{' '.join(cli)} show {record} >&-", shell=True, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert closed.returncode == 2 and "standard output is closed" in closed.stderr
    for argv, message in (
        (["show", str(record), "-o", "/proc/version"], "/proc/version"),
        (["history", "--since", "99999999d", "--history", str(record)], "before the year 1"),
    ):
        done = subprocess.run([*cli, *argv], capture_output=True, text=True, check=False)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


def test_a_loopback_target_is_traced_through_the_kernel_filter() -> None:
    """Raw sockets with the receive filter, in a network namespace of its own (only its
    loopback, brought up): the port unreachable of 127.0.0.1 gets through."""
    import json
    import os
    import shutil

    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root (raw sockets) and unshare")
    probe = [sys.executable, "-m", "reachtest", "probe", "127.0.0.1", "--no-icmp", "-p",
             "udp/9", "-p", "tcp/9", "-c", "1", "-m", "1", "--timeout", "0.5"]  # fmt: skip
    done = subprocess.run(
        [unshare, "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *probe],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "note:" not in done.stderr  # raw sockets, a filter compiled
    kinds = {(o["flow"], o["kind"]) for o in map(json.loads, done.stdout.splitlines())}
    assert kinds == {("udp/9", "port-unreachable"), ("tcp/9", "tcp-rst")}
