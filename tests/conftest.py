"""Shared test set-up: in CI (CI=true) a skipped lab test is a failure, never a silent pass."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: speed targets live in the benchmarks (scripts/bench*), and a busy
# 2-core machine made a pure function over a 20-hop topology miss the 200 ms default.
settings.register_profile("reachtest", deadline=None)
settings.load_profile("reachtest")

ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and item.get_closest_marker("lab") is not None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"lab test skipped in CI (CI=true), which counts as a failure: {reason}"


@dataclass(frozen=True)
class Built:
    """The source archive and the wheel built from this tree by ``python -m build``."""

    sdist: Path
    wheel: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Built once per session, as a release is (``python -m build``: the sdist first, the
    wheel from it), into a folder other users may read (the lab test installs it as
    uid 65534)."""
    folder = tmp_path_factory.mktemp("dist")
    for parent in (folder, *folder.parents):
        if parent == Path(tempfile.gettempdir()):
            break
        parent.chmod(parent.stat().st_mode | 0o755)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(folder), str(ROOT)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    (sdist,) = folder.glob("reachtest-*.tar.gz")
    (wheel,) = folder.glob("reachtest-*.whl")
    return Built(sdist, wheel)
