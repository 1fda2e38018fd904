"""The command line: parse, wire the layers together, write output, decide the exit code.

One module per command family: ``lab``; ``trace`` (probe, trace, show, demo);
``scheduled`` (config, run, history, diff, schedule); ``output`` (the one writer,
renderers, exit codes) and ``base`` (the group, messages, ``main``). Importing this
package registers every command; the heavy layers load inside the commands.
"""

from __future__ import annotations

from reachtest.cli import completion, doctor, exporter, lab, scheduled, trace
from reachtest.cli.base import cli, main
from reachtest.cli.output import save_reports, write_file
from reachtest.cli.pages import point_to_docs
from reachtest.cli.trace import DEMO_LAB

point_to_docs(cli)

__all__ = [
    "DEMO_LAB",
    "cli",
    "completion",
    "doctor",
    "exporter",
    "lab",
    "main",
    "save_reports",
    "scheduled",
    "trace",
    "write_file",
]
