"""A hypothesis property over the whole CLI (tests/unit/cli_fuzz.py): any combination of
generated arguments (options of every command, broken numbers, hostile strings, files of
every kind: devices, FIFOs, links, broken records and configs, another application's
SQLite) ends in exit 0-3 or 130, never 4 and never a traceback. Run in a network
namespace of its own (``unshare --net``): whatever it generates, nothing is sent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLES = int(os.environ.get("REACHTEST_CLI_EXAMPLES", "1500"))


def test_no_arguments_end_in_an_internal_error_or_a_traceback(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the CLI property needs root and unshare in CI")
        pytest.skip("needs root and unshare (a network namespace of its own)")
    done = subprocess.run(
        [unshare, "--net", sys.executable, "-m", "tests.unit.cli_fuzz", str(tmp_path),
         str(EXAMPLES)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (
        done.stdout[-3000:] + done.stderr[-6000:]
    )
