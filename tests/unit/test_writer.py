"""The one writer under real signals: SIGTERM or SIGINT while a file is written leaves
neither its temporary file nor a half file, and exits 130 (a real child process, real
signals, a file large enough to be caught mid-write)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = """
import sys
from pathlib import Path
from reachtest.cli import main
import time
import reachtest.cli as cli
import reachtest.cli.output as output

big = "x" * (768 * 2**20)
# The signal comes while the file is written or, on a disk fast enough to write it all
# first, before it is renamed into place: never after (a CI run once wrote it whole first).
made = output._as_open_makes_it
def slow(*args, **kwargs):
    time.sleep(60)
    return made(*args, **kwargs)
output._as_open_makes_it = slow
def command():
    cli.write_file(Path(sys.argv[1]), big)
    return 0
import click
cli.cli.add_command(click.command("bigwrite")(command))
sys.exit(main(["bigwrite"]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_write_leaves_no_temporary_and_no_half_file(
    tmp_path: Path, sig: signal.Signals
) -> None:
    target = tmp_path / "out" / "metrics.prom"
    target.parent.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        deadline = time.monotonic() + 60
        while not list(target.parent.iterdir()):  # the temporary file is there: writing
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.005)
        os.kill(child.pid, sig)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == 130, err
    assert err == "reachtest: error: interrupted\n"
    assert list(target.parent.iterdir()) == []


def test_a_saved_report_of_a_long_name_in_any_script_fits_a_file_name(tmp_path: Path) -> None:
    """60 four-byte letters made a name past NAME_MAX: the run failed after the first
    target's reports (issue 30)."""
    from reachtest.cli.output import save_reports
    from tests.unit.report.conftest import sim_record

    record = sim_record()
    record["targets"][0]["host"] = "\U00010330" * 200  # GOTHIC LETTER AHSA, 4 bytes each
    written = save_reports(record, str(tmp_path))
    assert len(written) == 3 and all(len(p.name.encode()) < 200 for p in written)
