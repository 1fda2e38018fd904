"""Build hook: the man pages, generated from the click definitions by click-man
(``reachtest.cli.manpages``) into build/man before setuptools reads its configuration,
which installs them as the wheel's data files in ``share/man/man1`` (``man reachtest``
after ``pip install`` or ``pipx install``). Everything else is in pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the source tree's reachtest, not an installed one
from reachtest.cli.manpages import write_pages  # noqa: E402

write_pages(HERE / "build" / "man")
setup()
