"""Schedule helpers: the cron.d line and the systemd timer say the interval asked for
(checked with systemd-analyze when it is there), and `schedule install` writes them."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from reachtest.cli import main, write_file
from reachtest.errors import UsageError
from reachtest.schedule.install import cron_file, every, systemd_units, unit_name

CONFIG = '[[target]]\nhost = "198.18.6.2"\nexpect = { "tcp/443" = "open" }\n'


@pytest.mark.parametrize(
    ("interval", "cron", "calendar"),
    [
        ("15m", "*/15 * * * *", "*:0/15"),
        ("1m", "* * * * *", "*:0/1"),
        ("2h", "0 */2 * * *", "0/2:00"),
        ("24h", "0 0 * * *", "daily"),
    ],
)
def test_the_interval_is_said_the_same_to_cron_and_systemd(
    interval: str, cron: str, calendar: str
) -> None:
    config = Path("/etc/reachtest/site a.toml")
    line = cron_file("/usr/bin/reachtest", config, interval, "ops@example.org").splitlines()
    assert "MAILTO=ops@example.org" in line
    assert f"{cron} root /usr/bin/reachtest run --config '/etc/reachtest/site a.toml'" in line
    units = systemd_units("/usr/bin/reachtest", config, interval)
    name = unit_name(config)
    assert name.startswith("reachtest-site-a-")
    assert sorted(units) == [f"{name}.service", f"{name}.timer"]
    assert f"OnCalendar={calendar}\n" in units[f"{name}.timer"]
    assert (
        "ExecStart=/usr/bin/reachtest run --config '/etc/reachtest/site a.toml'"
        in (units[f"{name}.service"])
    )
    analyze = shutil.which("systemd-analyze")
    if analyze:
        done = subprocess.run([analyze, "calendar", calendar], capture_output=True, check=False)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("bad", ["7m", "90m", "5h", "15", "soon", "0m"])
def test_an_interval_that_does_not_divide_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="--every takes minutes that divide the hour"):
        every(bad)


def test_install_writes_the_files_after_checking_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(CONFIG)
    dest = tmp_path / "units"
    assert main(["schedule", "install", "--config", str(config), "--systemd",
                 "--dest", str(dest), "--every", "5m"]) == 0  # fmt: skip
    name = unit_name(config)
    assert sorted(p.name for p in dest.iterdir()) == [f"{name}.service", f"{name}.timer"]
    assert f"systemctl enable --now {name}.timer" in capsys.readouterr().err
    assert main(["schedule", "install", "--config", str(config), "--dest", str(tmp_path)]) == 0
    assert "*/15 * * * * root " in (tmp_path / name).read_text()
    config.write_text(CONFIG + "bogus = 1\n")
    assert main(["schedule", "install", "--config", str(config), "--dest", str(dest)]) == 2
    assert "bogus: unknown key" in capsys.readouterr().err


def _install(config: Path, dest: Path, *more: str) -> int:
    return main(["schedule", "install", "--config", str(config), "--dest", str(dest), *more])


@pytest.mark.parametrize(
    "address",
    ["root\n* * * * * root touch /tmp/x", "not an address", "a@b c", "-froot", "x;y", ""],
)
def test_mail_to_takes_one_address_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], address: str
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(CONFIG)
    dest = tmp_path / "cron.d"
    dest.mkdir()
    assert _install(config, dest, "--mail-to", address) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mail-to takes one address" in err
    assert list(dest.iterdir()) == []
    assert _install(config, dest, "--mail-to", address, "--print") == 2
    assert _install(config, dest, "--mail-to", "ops@example.org") == 0
    assert "MAILTO=ops@example.org\n" in (dest / unit_name(config)).read_text()
    assert _install(config, dest, "--mail-to", "root", "--systemd") == 2
    assert "--mail-to is for cron" in capsys.readouterr().err


def _cron_command(line: str) -> str:
    """The command of a cron.d line as cron hands it to /bin/sh: cron(8) turns an
    unescaped % into a newline (the rest is the command's input) and \\% into %."""
    command = line.split(" root ", 1)[1]
    out, escaped = [], False
    for ch in command:
        if escaped:
            out.append(ch if ch == "%" else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            break
        else:
            out.append(ch)
    return "".join(out)


def test_a_percent_or_a_dollar_in_the_config_path_reaches_the_program_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "50% of $HOME"
    folder.mkdir()
    config = folder / "site%n.toml"
    config.write_text(CONFIG)
    printer = tmp_path / "argv"
    printer.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    printer.chmod(0o755)
    text = cron_file(str(printer), config.resolve(), "5m", None)
    line = next(x for x in text.splitlines() if " root " in x)
    assert "\\%" in line
    command = ["/bin/sh", "-c", _cron_command(line)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.stdout.splitlines() == ["run", "--config", str(config.resolve())]
    service = systemd_units(str(printer), config.resolve(), "5m")
    unit = service[f"{unit_name(config)}.service"]
    exec_start = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    assert "50%% of $$HOME" in exec_start and "site%%n.toml" in exec_start
    assert "%n" not in exec_start.replace("%%", "")  # no specifier left for systemd
    assert "Description=reachtest scheduled run of " in unit and "50%% of" in unit
    capsys.readouterr()


@pytest.mark.parametrize("bad", ["a\nb.toml", "a\\b.toml", "tab\there.toml"])
def test_a_config_path_cron_or_systemd_would_misread_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    config = tmp_path / bad
    config.write_text(CONFIG)
    dest = tmp_path / "units"
    assert _install(config, dest) == 2
    assert _install(config, dest, "--systemd") == 2
    err = capsys.readouterr().err
    assert "cannot be scheduled" in err and err.count("\n") == 2
    assert not dest.exists()


def test_two_configs_named_alike_get_schedules_of_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "cron.d"
    configs = []
    for site in ("east", "west"):
        (tmp_path / site).mkdir()
        configs.append(tmp_path / site / "site.toml")
        configs[-1].write_text(CONFIG)
        assert _install(configs[-1], dest) == 0
    files = sorted(dest.iterdir())
    assert len(files) == 2
    assert [str(c.resolve()) in f.read_text() for c in configs for f in files].count(True) == 2
    assert _install(configs[0], dest, "--every", "1h") == 0  # its own file is replaced
    assert len(list(dest.iterdir())) == 2
    assert "0 */1 * * * root" in (dest / unit_name(configs[0])).read_text()
    assert "*/15 * * * * root" in (dest / unit_name(configs[1])).read_text()
    capsys.readouterr()


def test_a_file_of_someone_else_under_the_schedule_name_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(CONFIG)
    dest = tmp_path / "cron.d"
    dest.mkdir()
    theirs = dest / unit_name(config)
    theirs.write_text("0 * * * * root /usr/local/bin/backup\n")
    assert _install(config, dest) == 2
    assert "is not reachtest's: left as it is" in capsys.readouterr().err
    assert theirs.read_text() == "0 * * * * root /usr/local/bin/backup\n"


def test_print_shows_exactly_what_install_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.toml"
    config.write_text(CONFIG)
    for more in ((), ("--systemd",)):
        dest = tmp_path / f"dest{len(more)}"
        capsys.readouterr()
        assert _install(config, dest, *more, "--print") == 0
        shown = capsys.readouterr().out
        assert not dest.exists()
        assert _install(config, dest, *more) == 0
        written = "".join(f"# {p}\n{p.read_text()}\n" for p in sorted(dest.iterdir()))
        assert shown == written


def test_the_service_runs_hardened_as_its_own_user_and_passes_systemd_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """User reachtest with CAP_NET_RAW only, no new privileges, the file system read-only
    but for the folders of the history, the reports and the metrics from the config;
    `systemd-analyze verify` finds nothing to say (not even a warning)."""
    config = tmp_path / "site 50%.toml"
    config.write_text(
        'history = "state/history.sqlite"\nreports = "out reports"\n'
        'prometheus = "metrics/reachtest.prom"\n' + CONFIG
    )
    dest = tmp_path / "units"
    assert _install(config, dest, "--systemd", "--every", "15m") == 0
    err = capsys.readouterr().err
    assert "useradd --system" in err and "chown reachtest:" in err
    (service,) = dest.glob("*.service")
    text = service.read_text()
    lines = text.splitlines()
    for want in ("User=reachtest", "Group=reachtest", "AmbientCapabilities=CAP_NET_RAW",
                 "CapabilityBoundingSet=CAP_NET_RAW", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes"):  # fmt: skip
        assert want in lines, want
    folders = [line for line in lines if line.startswith("ReadWritePaths=")]
    assert folders == [
        f'ReadWritePaths="-{tmp_path}/metrics"',
        f'ReadWritePaths="-{tmp_path}/out reports"',
        f'ReadWritePaths="-{tmp_path}/state"',
    ]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here")
    # verify wants ExecStart to exist: point it at this reachtest (or this python)
    program = Path(sys.executable).parent / "reachtest"
    exec_start = next(line for line in lines if line.startswith("ExecStart="))
    fixed = f"ExecStart={program} run --config 'site.toml'"
    service.write_text(text.replace(exec_start, fixed))
    done = subprocess.run(
        [analyze, "verify", *map(str, sorted(dest.iterdir()))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


EXPORTER_CONFIG = '[exporter]\nallow = ["198.18.0.0/15"]\n[module.web]\nservices = ["tcp/443"]\n'


def test_the_exporter_gets_a_long_running_service_with_cap_net_raw_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "exporter.toml"
    config.write_text(EXPORTER_CONFIG)
    dest = tmp_path / "units"
    assert _install(config, dest, "--exporter", "--vantage", "site a", "--listen", ":9469") == 0
    [unit] = list(dest.iterdir())
    assert unit.name.startswith("reachtest-exporter-") and unit.suffix == ".service"
    text = unit.read_text()
    exec_start = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1:] == ["exporter", "--config", str(config.resolve()), "--listen", ":9469",
                        "--vantage", "site a"]  # fmt: skip
    wanted = (
        "Type=simple", "Restart=on-failure", "User=reachtest", "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW", "NoNewPrivileges=yes", "ProtectSystem=strict",
        "WantedBy=multi-user.target", "Environment=GLIBC_TUNABLES=glibc.malloc.tcache_count=0",
    )  # fmt: skip
    for line in wanted:
        assert line in text.splitlines(), line
    assert "ReadWritePaths" not in text  # it writes nothing
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--listen", ":9469"), "--listen and --vantage go with --exporter"),
        (("--exporter", "--listen", "nowhere"), "--listen 'nowhere'"),
        (("--exporter", "--mail-to", "root"), "--mail-to is for cron"),
    ],
)
def test_exporter_install_mistakes_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], words: str
) -> None:
    config = tmp_path / "exporter.toml"
    config.write_text(EXPORTER_CONFIG)
    dest = tmp_path / "units"
    assert _install(config, dest, *args) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not dest.exists()


def test_files_root_writes_for_others_are_0644_under_any_umask(tmp_path: Path) -> None:
    """Under ``umask 000`` cron and systemd files were written world-writable (issue)."""
    config = tmp_path / "site.toml"
    config.write_text(CONFIG)
    old = os.umask(0)
    try:
        assert _install(config, tmp_path / "cron") == 0
        assert _install(config, tmp_path / "units", "--systemd") == 0
        assert main(["config", "check", str(config)]) == 0
        report = write_file(tmp_path / "report.md", "x\n")
    finally:
        os.umask(old)
    written = [*(tmp_path / "cron").iterdir(), *(tmp_path / "units").iterdir()]
    assert len(written) == 3
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o644}
    assert not stat.S_IMODE(report.stat().st_mode) & 0o002  # an output: never world-writable
