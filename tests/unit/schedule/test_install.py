"""Schedule helpers: the cron.d line and the systemd timer say the interval asked for
(checked with systemd-analyze when it is there), and `schedule install` writes them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reachtest.cli import main
from reachtest.errors import UsageError
from reachtest.schedule.install import cron_file, every, systemd_units

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
    assert sorted(units) == ["reachtest-site-a.service", "reachtest-site-a.timer"]
    assert f"OnCalendar={calendar}\n" in units["reachtest-site-a.timer"]
    assert (
        "ExecStart=/usr/bin/reachtest run --config '/etc/reachtest/site a.toml'"
        in (units["reachtest-site-a.service"])
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
    assert sorted(p.name for p in dest.iterdir()) == [
        "reachtest-site.service", "reachtest-site.timer",
    ]  # fmt: skip
    assert "systemctl enable --now reachtest-site.timer" in capsys.readouterr().err
    assert main(["schedule", "install", "--config", str(config), "--dest", str(tmp_path)]) == 0
    assert "*/15 * * * * root " in (tmp_path / "reachtest-site").read_text()
    config.write_text(CONFIG + "bogus = 1\n")
    assert main(["schedule", "install", "--config", str(config), "--dest", str(dest)]) == 2
    assert "bogus: unknown key" in capsys.readouterr().err
