"""Output of every command: the one writer, output checks, renderers, saved reports, exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reachtest.errors import (
    EXIT_NOT_REACHED,
    EXIT_OK,
    UsageError,
)

if TYPE_CHECKING:
    pass


def exit_code(record: dict[str, Any]) -> int:
    """The exit code a finished run gives (errors map to theirs in ``main``)."""
    from reachtest.report.record import run_ok

    return EXIT_OK if run_ok(record) else EXIT_NOT_REACHED


def _one_stdout(**paths: str | None) -> None:
    """At most one output may go to stdout (``-``)."""
    taken = [f"--{name} -" for name, path in paths.items() if path == "-"]
    if len(taken) > 1:
        raise UsageError(f"{' and '.join(taken)} cannot both write to stdout")


def check_output(path: str | None, what: str) -> None:
    """Fail before any probe is sent when ``path`` cannot be written."""
    try:
        _check_output(path, what)
    except OSError as exc:  # a folder on the way this user may not pass
        raise UsageError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None


def _check_output(path: str | None, what: str) -> None:
    if path is None or path == "-":
        return
    if not path.strip():
        raise UsageError(f"cannot write {what} to {path!r}: give a file name (or - for stdout)")
    if "\x00" in path:
        raise UsageError(f"cannot write {what}: the file name holds a NUL byte")
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write {what} to {path}: it is a directory")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        kind = "a symbolic link" if target.is_symlink() else "not a regular file"
        raise UsageError(f"cannot write {what} to {path}: it is {kind}, left as it is")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot write {what} to {path}: no directory {str(folder)!r}")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"cannot write {what} to {path}: permission denied")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links and bind mounts too
    except OSError:
        return a.resolve() == b.resolve()


def check_distinct(outputs: dict[str, str | None], inputs: dict[str, str | Path | None]) -> None:
    """No two outputs the same file, and no output that is an input (a record, the
    history, the configuration): one of them would be lost. Keys say what each is."""
    named = [(what, Path(p)) for what, p in outputs.items() if p is not None and p != "-"]
    for i, (what, path) in enumerate(named):
        for other, other_path in named[i + 1 :]:
            if _same(path, other_path):
                raise UsageError(f"{what} and {other} would be the same file {path}")
        for source, source_path in inputs.items():
            if source_path is None or str(source_path) == "-":
                continue
            if _same(path, Path(source_path)):
                raise UsageError(f"cannot write {what} to {path}: it is {source}")


WHAT = {
    "text": "the report",
    "json": "the JSON record",
    "csv": "the CSV file",
    "markdown": "the Markdown report",
    "html": "the HTML report",
}


def check_outputs(outputs: dict[str, str | None]) -> None:
    """Every output path writable, and at most one on stdout, before any work is done."""
    _one_stdout(**outputs)
    for name, path in outputs.items():
        check_output(path, WHAT[name])


def check_out_dir(path: str | None, what: str = "--out-dir") -> None:
    """Fail before any work when the folder ``path`` (named ``what`` in the message: the
    option or the config key the user gave) cannot take new files."""
    if path is None:
        return
    folder = Path(path)
    if folder.is_symlink() and not folder.exists():
        raise UsageError(f"{what} {path}: a symbolic link to nothing")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {path}: not a directory")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{what} {path}: permission denied")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary_beside(path: Path, suffix: str) -> tuple[int, str]:
    """A new temporary file beside ``path`` (descriptor, name), after refusing a ``path``
    that is a link, a device or a folder: the first step of every write."""
    import tempfile

    try:
        odd = path.is_symlink() or (path.exists() and not path.is_file())
    except OSError as exc:  # a folder on the way this user may not pass
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    if odd:
        raise UsageError(f"cannot write {path}: it is not a regular file, left as it is")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as exc:  # a folder that takes no new file (/proc), a full disk, ...
        raise UsageError(
            f"cannot write {path}: its folder {str(path.parent)!r} takes no new file "
            f"({exc.strerror or exc})"
        ) from None


def _as_open_makes_it(temporary: str, mode: int | None = None) -> None:
    """``mode`` exactly, or the mode open() would give a new file under the umask (not
    mkstemp's 0600) but never writable by others, whatever the umask (``umask 000``)."""
    os.chmod(temporary, mode if mode is not None else 0o666 & ~(_umask() | 0o002))


def write_file(
    path: Path, text: str | bytes, *, exclusive: bool = False, mode: int | None = None
) -> Path:
    """Write ``text`` (or bytes) to ``path`` whole or not at all (a temporary file renamed
    into place).
    ``exclusive``: never replace an existing file; add -2, -3, ... to the name instead.
    ``mode``: the file's mode exactly (files root writes for others: units, cron files);
    by default the umask's, less write for others."""
    fd, temporary = _temporary_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(text.encode() if isinstance(text, str) else text)
        _as_open_makes_it(temporary, mode)
        if not exclusive:
            os.replace(temporary, path)
            return path
        final, n = path, 1
        while True:
            try:
                os.link(temporary, final)
                return final
            except FileExistsError:
                n += 1
                final = path.with_name(f"{path.stem}-{n}{path.suffix}")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


class StreamFile:
    """A file written as a run goes (the pcap), through the same rules as ``write_file``:
    into a temporary file beside ``path``, renamed into place by ``commit`` (whole), or
    removed by ``discard``. A run killed outright (SIGKILL) leaves the temporary file,
    readable up to what was flushed."""

    def __init__(self, path: Path) -> None:
        fd, temporary = _temporary_beside(path, ".partial")
        self.path = path
        self.temporary = temporary
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> Path:
        try:
            self.file.close()
            _as_open_makes_it(self.temporary)
            os.replace(self.temporary, self.path)
        except OSError as exc:
            self.discard()
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)


#: A saved report's name holds at most this many bytes of its target's name: with the
#: time, suffixes and the temporary file's affixes it stays under NAME_MAX (255 bytes)
#: whatever the script (a 4-byte letter 60 times did not).
NAME_BYTES = 120


def _safe(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-._" else "_" for c in text).strip("._")[:60]
    while len(keep.encode()) > NAME_BYTES:
        keep = keep[:-1]
    return keep or "target"


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def print_report(record: dict[str, Any]) -> None:
    """The report on stdout: coloured and fitted to the terminal, plain text otherwise."""
    from reachtest.report.terminal import render, render_text
    from reachtest.report.view import build_view

    view = build_view(record)
    if _stdout_is_terminal():
        from rich.console import Console

        console = Console(highlight=False)  # wraps words, unlike the soft-wrapping one
        console.print(render(view, console.width))
    else:
        sys.stdout.write(render_text(view))
        sys.stdout.flush()


def _markdown(record: dict[str, Any]) -> str:
    from reachtest.report.markdown import render_markdown
    from reachtest.report.view import build_view

    return render_markdown(build_view(record))


def _html(record: dict[str, Any]) -> str:
    from reachtest.report.html import render_html
    from reachtest.report.view import build_view

    return render_html(build_view(record))


def _text(record: dict[str, Any]) -> str:
    from reachtest.report.terminal import render_text
    from reachtest.report.view import build_view

    return render_text(build_view(record))


def _json(record: dict[str, Any]) -> str:
    from reachtest.report.record import dumps

    return dumps(record)


def _csv(record: dict[str, Any]) -> str:
    from reachtest.report.csvfile import render_csv

    return render_csv(record)


#: What ``--format`` and the output options can write, by name.
RENDER = {"text": _text, "json": _json, "csv": _csv, "markdown": _markdown, "html": _html}
#: What ``--save`` writes into the output folder, by file suffix.
SAVED = ((".json", _json), (".html", _html), (".md", _markdown))
DEFAULT_OUT_DIR = "reports"


def saved_stem(record: dict[str, Any]) -> str:
    """``<UTC start>_<first target>[+N]``: the name of a saved report, without suffix."""
    stamp = record["started"].replace("-", "").replace(":", "")[:15] + "Z"
    hosts = [t["host"] for t in record["targets"]]
    return f"{stamp}_{_safe(hosts[0]) if hosts else 'none'}" + (
        f"+{len(hosts) - 1}" if len(hosts) > 1 else ""
    )


def save_reports(record: dict[str, Any], out_dir: str) -> list[Path]:
    """JSON, HTML and Markdown of ``record`` in ``out_dir``, under one new name: an
    earlier report of the same second and target is never replaced (-2, -3, ... added)."""
    stem = saved_stem(record)
    (suffix, render), *rest = SAVED
    first = write_file(Path(out_dir) / f"{stem}{suffix}", render(record), exclusive=True)
    return [first] + [write_file(first.with_suffix(s), r(record), exclusive=True) for s, r in rest]


def write_outputs(record: dict[str, Any], outputs: dict[str, str | None]) -> list[Path]:
    """Each format in ``outputs`` (name -> FILE, or ``-`` for stdout) written where asked.
    Returns the files written."""
    written = []
    for name, path in outputs.items():
        if path is None:
            continue
        text = RENDER[name](record)
        if path == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            written.append(write_file(Path(path), text))
    return written
