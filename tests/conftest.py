"""Shared test set-up: in CI (CI=true) a skipped lab test is a failure, never a silent pass."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from hypothesis import settings

# No per-example deadline: speed targets live in the benchmarks (scripts/bench*), and a busy
# 2-core machine made a pure function over a 20-hop topology miss the 200 ms default.
settings.register_profile("reachtest", deadline=None)
settings.load_profile("reachtest")


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
