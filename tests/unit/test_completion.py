"""Shell completion (issue 29): `reachtest completion SHELL` prints click's script, and a
real bash that sources it completes commands, trace's options and the lab's scenario
names by calling the installed console script back."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from reachtest.lab.scenarios import SCENARIOS
from tests.lab.conftest import reachtest_cmd


def reachtest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*reachtest_cmd(), *args], capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shells_script_calls_reachtest_back(shell: str) -> None:
    done = reachtest("completion", shell)
    assert done.returncode == 0, done.stderr
    assert "_REACHTEST_COMPLETE" in done.stdout and f"{shell}_complete" in done.stdout
    assert done.stderr == ""


def test_an_unknown_shell_is_a_one_line_usage_error() -> None:
    done = reachtest("completion", "tcsh")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in (
        done.stderr
    )


def bash_completes(*words: str) -> list[str]:
    """What a real bash offers after sourcing `reachtest completion bash` for the
    command line ``words`` (the last one being completed)."""
    bash = shutil.which("bash")
    assert bash, "bash is needed for this test"
    exe = reachtest_cmd()[0]
    script = reachtest("completion", "bash").stdout
    line = " ".join(["reachtest", *words])
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}\n"
        f'_reachtest_completion "{exe}"\nprintf "%s\\n" "${{COMPREPLY[@]}}"\n'
    )
    done = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completes_commands_options_choices_and_scenarios() -> None:
    assert bash_completes("tr") == ["trace"]
    assert "completion" in bash_completes("")
    assert bash_completes("trace", "--mda-c") == ["--mda-confidence"]
    assert set(bash_completes("lab", "up", "ecmp")) == {
        n for n in SCENARIOS if n.startswith("ecmp")
    }
    assert "ecmp-uneven-drop" in bash_completes("lab", "up", "")
    assert bash_completes("completion", "f") == ["fish"]
