"""The README's everyday examples, and the docs' examples, are what the program does
(issue 29): each command shown after ``<!-- lab: SCENARIO exit: N -->`` is run in that
scenario's lab, from its client, in a folder holding the files shown after
``<!-- file: NAME -->``; it must end with exit code N and print every line shown, in
order. Numbers (times, counts, addresses, dates) may differ, and so may the lab's name in
host names; a shown line ``...`` stands for lines left out; a line ending in ``...``
stands for its words, and the rest of its line left out; line breaks do not matter (a
long finding wraps where the terminal ends)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.conftest import MakeLab, reachtest_cmd

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!-- (lab|file): (\S+)(?: exit: (\d+))? -->$")


@dataclass
class Example:
    scenario: str
    command: str
    exit_code: int
    shown: list[str]
    files: dict[str, str] = field(default_factory=dict)


def examples(text: str) -> list[Example]:
    """Every marked console block of ``text``, with the files marked before it."""
    found: list[Example] = []
    files: dict[str, str] = {}
    lines = text.splitlines()
    for number, line in enumerate(lines):
        mark = MARK.match(line)
        if not mark:
            continue
        end = lines.index("```", number + 2)
        block = lines[number + 2 : end]
        if mark.group(1) == "file":
            files[mark.group(2)] = "\n".join(block) + "\n"
            continue
        assert block[0].startswith("$ reachtest "), block[0]
        found.append(
            Example(mark.group(2), block[0][2:], int(mark.group(3) or 0), block[1:], dict(files))
        )
        files = {}
    return found


def tokens(text: str) -> list[str]:
    """Words with every number made 0 and every lab host name made one word."""
    words = []
    for word in text.split():
        name = ".reachtest" in word or word.endswith("…")
        words.append("<name>" if name else re.sub(r"\d+", "0", word))
    return words


def shown_in(shown: list[str], printed: str) -> str | None:
    """None when every shown line's words come in order in what was printed; else the
    first shown line that does not."""
    have = tokens(printed)
    at = 0
    for line in shown:
        if line.strip() in {"", "..."}:
            continue
        want = tokens(line.rstrip().removesuffix("..."))  # "words ...": those words
        for start in range(at, len(have) - len(want) + 1):
            if have[start : start + len(want)] == want:
                at = start + len(want)
                break
        else:
            return line
    return None


EXAMPLES = [example for page in PAGES for example in examples(page.read_text())]


def test_the_readme_has_its_five_examples_and_the_docs_more() -> None:
    assert len(examples(README.read_text())) == 5
    assert len(EXAMPLES) > 5
    assert all(len([s for s in e.shown if s.strip() not in {"", "..."}]) >= 3 for e in EXAMPLES)


def test_the_comparison_tells_a_different_output() -> None:
    """The check can fail: a verdict that differs in one word is not shown."""
    printed = " tcp/443  filtered   no-response   silent after hop 3 (198.18.3.2)  6/6\n"
    assert (
        shown_in([" tcp/443  filtered   no-response   silent after hop 4 (198.18.4.2)"], printed)
        is None
    )
    assert shown_in([" tcp/443  open   syn-ack"], printed) == " tcp/443  open   syn-ack"
    assert shown_in(["a", "b"], "b a") == "b"
    assert shown_in(["tcp/443 filtered ..."], "x tcp/443 filtered no-response") is None


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.command for e in EXAMPLES])
def test_the_readme_example_prints_what_it_shows(
    example: Example, make_lab: MakeLab, tmp_path: Path
) -> None:
    lab = make_lab(example.scenario)
    for name, content in example.files.items():
        (tmp_path / name).write_text(content)
    words = example.command.split()
    done = subprocess.run(
        [*reachtest_cmd(), "lab", "exec", "--name", lab.lab_id, "--", *reachtest_cmd(), *words[1:]],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == example.exit_code, done.stdout + done.stderr
    missing = shown_in(example.shown, done.stdout)
    assert missing is None, f"not printed: {missing!r}\n{done.stdout}"
