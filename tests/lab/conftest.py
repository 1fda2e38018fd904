"""Lab fixtures: real namespaces, brought up per test and always torn down."""

from __future__ import annotations

import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from reachtest.engine.tracer import Tracer
from reachtest.engine.transport import RawTransport
from reachtest.errors import ReachtestError
from reachtest.lab import manager, netns
from reachtest.lab.plan import LabPlan
from reachtest.lab.scenarios import SCENARIOS, scenario
from reachtest.lab.topology import NETNS_PREFIX
from reachtest.model import FlowSpec, RunResult, TraceParams

#: Every lab a test makes has an id starting with this, so leftovers can be found.
TEST_PREFIX = "t"
#: The scenarios whose truth holds requests blocked after the handshake (or DNS queries).
REQUEST_SCENARIOS = tuple(name for name in SCENARIOS if scenario(name, 5).truth.requests)
#: The scenarios where one branch of an ECMP hop blocks a flow: which branch a single
#: flow takes is its hash's choice, so a single-flow truth holds either way; their own
#: truth (which flow hashes die, where) is tested by ``test_multipath.py``.
BRANCH_SCENARIOS = tuple(name for name in SCENARIOS if scenario(name, 5).truth.branch_block)
#: Every other scenario: one truth per flow.
SINGLE_PATH_SCENARIOS = tuple(name for name in SCENARIOS if name not in BRANCH_SCENARIOS)
_made: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.lab)


def lab_unavailable() -> str | None:
    """Why lab tests cannot run here, or None when they can."""
    needed = (1 << netns.CAP_SYS_ADMIN) | (1 << netns.CAP_NET_ADMIN) | (1 << netns.CAP_NET_RAW)
    if netns.effective_capabilities() & needed != needed:
        return "not root (needs CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW)"
    for program, package in (("ip", "iproute2"), ("nft", "nftables"), ("ping", "iputils-ping")):
        try:
            netns.require_program(program, package)
        except ReachtestError as exc:
            return str(exc)
    return None


def new_lab_id() -> str:
    lab_id = TEST_PREFIX + secrets.token_hex(4)
    _made.add(lab_id)
    return lab_id


@pytest.fixture(scope="session", autouse=True)
def no_leftovers() -> Iterator[None]:
    """After the whole lab suite, no namespace, process or file of a test lab is left.
    Only what this session made counts: a test lab left by an earlier run that was killed
    (a machine restart mid-suite) is not this run's failure, and not ours to remove."""
    before = set(netns.list_netns())
    yield
    left = [
        n
        for n in netns.list_netns()
        if n.startswith(NETNS_PREFIX + TEST_PREFIX) and n not in before
    ]
    for lab_id in sorted(_made):
        manager.down(lab_id)  # clean up anyway, then report
    assert not left, f"test labs left namespaces behind: {left}"


@pytest.fixture
def lab_ready() -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)


@dataclass
class Lab:
    """A running lab in a test: its plan and convenient addresses."""

    plan: LabPlan

    @property
    def lab_id(self) -> str:
        return self.plan.topology.lab_id

    @property
    def client(self) -> str:
        return self.plan.topology.netns("client")

    def server(self, v6: bool = False) -> str:
        return str(self.plan.topology.server_address(v6=v6))

    def hop(self, ttl: int, v6: bool = False) -> set[str]:
        return {str(a) for a in self.plan.topology.hop_addresses(ttl, v6=v6)}


MakeLab = Callable[..., Lab]


@pytest.fixture
def make_lab(lab_ready: None) -> Iterator[MakeLab]:
    """Factory: ``make_lab("tcp-drop", hops=5, targets=0)``; every lab is removed after the
    test, whatever happened in it."""
    made: list[str] = []

    def make(scenario: str, **options: object) -> Lab:
        lab_id = new_lab_id()
        made.append(lab_id)
        return Lab(manager.up(scenario, lab_id=lab_id, **options))  # type: ignore[arg-type]

    try:
        yield make
    finally:
        for lab_id in made:
            manager.down(lab_id)


def reachtest_cmd() -> list[str]:
    """The installed console script: the one beside this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "reachtest"
    exe = str(beside) if beside.exists() else shutil.which("reachtest")
    assert exe, "the reachtest console script is not installed (pip install -e .)"
    return [exe]


def run_engine(
    lab: Lab, targets: Sequence[str], flows: Sequence[FlowSpec], params: TraceParams
) -> RunResult:
    """Trace ``targets`` with the real engine from inside the lab's client namespace."""
    with netns.entered(lab.client):
        transport = RawTransport()
        try:
            return Tracer(transport, targets, flows, params).run()
        finally:
            transport.close()
