"""Man pages from the click definitions (click-man), one per command, for the package's
``share/man/man1``: written at build time by ``setup.py`` and checked by the tests
(``man -l`` renders them, ``mandoc -T lint`` finds no warning).

click-man writes click's help as roff as it is; two things of click's are not roff and
are mended here: the ``\\b`` line that keeps a paragraph unwrapped becomes a no-fill
block (``.nf`` ... ``.fi``), and a paragraph macro right after a section heading (which
roff skips, with a warning) is left out. A text line that would start with a roff
control character is escaped.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

MACROS = (".TH", ".SH", ".SS", ".B", ".TP", ".PP", ".nf", ".fi", ".RS", ".RE", ".IP")


def mend(text: str) -> str:
    """One page made lint-clean (see the module's docstring)."""
    out: list[str] = []
    verbatim = False
    for line in text.splitlines():
        if line == "\b":
            if verbatim:
                out.append(".fi")
            out.append(".nf")
            verbatim = True
            continue
        macro = line.startswith(MACROS)
        if verbatim and (macro or not line.strip()):
            out.append(".fi")
            verbatim = False
        if line == ".PP" and out and out[-1].startswith(".SH"):
            continue
        out.append("\\&" + line if not macro and line[:1] in (".", "'") else line)
    if verbatim:
        out.append(".fi")
    return "\n".join(out) + "\n"


def see_also(name: str) -> str:
    """The SEE ALSO section of page ``name`` (``reachtest-lab-up.1``): the pages above it
    and its pages of the documentation (``reachtest/cli/pages.py``)."""
    from reachtest.cli.pages import pages_for

    parts = name.removesuffix(".1").split("-")[1:]
    above = ["reachtest" + "".join("\\-" + p for p in parts[:n]) for n in range(len(parts))]
    refs = ",\n".join(f"\\fB{page}\\fR(1)" for page in above)
    docs = ", ".join(pages_for(" ".join(parts)))
    lines = [".SH SEE ALSO"] + ([refs, ".PP"] if refs else [])
    lines += [
        f"The documentation: {docs}",
        "(share/doc/reachtest where reachtest is installed, docs/ in its source).",
    ]
    return "\n".join(lines) + "\n"


def write_pages(target: Path) -> list[Path]:
    """Every command's page into ``target`` (made if missing): ``reachtest.1``,
    ``reachtest-trace.1``, ``reachtest-lab-up.1``, ... The date is SOURCE_DATE_EPOCH's
    when it is set (reproducible builds), else today's."""
    from click_man.core import write_man_pages

    from reachtest import __version__
    from reachtest.cli import cli

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as raw, warnings.catch_warnings():
        # click-man calls helpers click deprecates for 9.0: its concern, not the user's.
        warnings.simplefilter("ignore", DeprecationWarning)
        write_man_pages(
            "reachtest", cli, version=__version__, target_dir=raw,
            date=when.strftime("%Y-%m-%d"),
        )  # fmt: skip
        written = []
        for page in sorted(Path(raw).glob("*.1")):
            out = target / page.name
            out.write_text(mend(page.read_text()) + see_also(page.name))
            written.append(out)
    return written
