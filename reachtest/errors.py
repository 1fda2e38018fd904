"""The ReachtestError hierarchy: every error a user may see, with its exit code."""

from __future__ import annotations

#: Exit codes shared by every command (documented in docs/exit-codes.md and ``--help``).
EXIT_OK = 0
EXIT_NOT_REACHED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 4


class ReachtestError(Exception):
    """Base class: a message for one line on stderr and the exit code that goes with it."""

    exit_code: int = EXIT_INTERNAL


class UsageError(ReachtestError):
    """Bad input from the user: an unknown name, a value out of range, a bad file."""

    exit_code = EXIT_USAGE


class PrivilegeError(ReachtestError):
    """The process lacks a privilege it needs (root, CAP_NET_RAW, CAP_NET_ADMIN)."""

    exit_code = EXIT_ENVIRONMENT


class EnvironmentProblem(ReachtestError):
    """The machine lacks something: a program, a kernel feature, a namespace."""

    exit_code = EXIT_ENVIRONMENT


class LabError(EnvironmentProblem):
    """Bringing the lab up or down failed."""
