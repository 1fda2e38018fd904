"""The live view in a real terminal (tmux): the hop table and the verdict panel appear and
update, `q` stops the trace, the final report is printed, the terminal is restored."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.conftest import MakeLab, reachtest_cmd


class Tmux:
    """A tmux server of our own (its own socket), one session, killed at the end."""

    def __init__(self, socket: Path) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.skip("tmux is needed to drive the live view (apt install tmux)")
        self.base = [tmux, "-S", str(socket), "-f", "/dev/null"]  # no user configuration

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "live", "-S", "-200")

    def wait_for(self, *texts: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"the screen never showed {texts}:\n{screen}")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    one = Tmux(tmp_path / "tmux.sock")
    try:
        yield one
    finally:
        subprocess.run([*one.base, "kill-server"], capture_output=True, check=False)


#: The whole of the drop's finding, as one sentence.
PROVEN = (
    "silently dropped after hop 3 (198.18.3.2), before hop 4 [proven: a probe sent alone at "
    "TTL 4 after the router's ICMP budget refilled stayed silent too] (confidence 100%)"
)


def finding(screen: str) -> str:
    """The first finding on the screen, its wrapped lines joined with one space."""
    lines = screen.splitlines()
    start = next((i for i, line in enumerate(lines) if "[critical]" in line), None)
    if start is None:
        return ""
    said = [lines[start].strip()]
    for line in lines[start + 1 :]:
        if not line.startswith(" " * 13) or line.lstrip().startswith("- "):
            break
        said.append(line.strip())
    return " ".join(said)


def test_live_view_shows_table_and_verdicts_and_quits_on_q(make_lab: MakeLab, tmux: Tmux) -> None:
    lab = make_lab("tcp-drop")
    exe = reachtest_cmd()[0]
    trace = [exe, "lab", "exec", "--name", lab.lab_id, "--", exe, "trace", "server", "-4",
             "-p", "tcp/443", "-p", "tcp/80", "-c", "1000", "-i", "0.2"]  # fmt: skip
    shell = (
        # the terminal's own size, not one inherited from the test runner's environment
        f"unset COLUMNS LINES; {shlex.join(trace)}; echo EXIT=$?; "
        "stty -a | grep -o -- '-*icanon' | sed 's/^/TTY:/'; sleep 60"
    )
    tmux.run("new-session", "-d", "-s", "live", "-x", "160", "-y", "45", shell)
    assert tmux.run("display", "-p", "-t", "live", "#{window_width}").strip() == "160"
    # every flow's column group with mtr's columns, the verdict panel, the progress line
    screen = tmux.wait_for(
        "tcp/443", "tcp/80", "Loss%", "Snt", "Avg", "Verdicts", "Findings", "press q to stop"
    )
    assert "round " in screen and "TTL" in screen
    # the live table grows: Snt of the first hop goes up between two looks
    first = tmux.wait_for("silently dropped after hop")
    time.sleep(1.0)
    assert tmux.screen() != first
    # Findings wrap at word boundaries at any width, the whole sentence kept (issue 31:
    # the live view cut them at the terminal's edge, "... ICMP budget re").
    for width in (80, 120, 200):
        tmux.run("resize-window", "-t", "live", "-x", str(width), "-y", "45")
        deadline = time.monotonic() + 20
        while True:
            screen = tmux.screen()
            said = finding(screen)
            if PROVEN in said or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert PROVEN in said, (width, screen)
        assert "silent = no answer" in screen, (width, screen)  # the legend, wrapped too
        assert all(len(line) <= width for line in screen.splitlines()), width
    # A resize leaves the frames drawn before it in the scrollback (as in any terminal):
    # the final report is read without them.
    tmux.run("clear-history", "-t", "live")
    tmux.run("send-keys", "-t", "live", "q")
    final = tmux.wait_for("EXIT=", "TTY:", timeout=15)
    assert PROVEN in finding(final)
    assert "EXIT=1" in final  # tcp/443 is filtered
    assert "TTY:icanon" in final  # the terminal is back in line mode
    assert "(stopped early)" in final and "press q to stop" not in final
    assert "silently dropped after hop" in final and "Verdicts" in final
    assert "Traceback" not in final
