"""The request flows' options of `trace` (tls/PORT, http/PORT, dns/PORT, --sni,
--host-header, --qname, --qtype, --control-name): every bad value is one line and exit
2, before anything is sent or any name looked up (literal addresses only here: no
resolver is asked)."""

from __future__ import annotations

import pytest

from reachtest.cli import main


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-p", "tls/443"], "give the name to ask for (--sni NAME"),
        (["-p", "http/80"], "(--host-header NAME"),
        (["-p", "tls/443", "--sni", "a b"], "--sni 'a b'"),
        (["-p", "tls/443", "--sni", "x\x1b[2J.example"], "--sni"),
        (["-p", "tls/443", "--sni", "a" * 300], "63 characters"),
        (["-p", "http/80", "--host-header", "a..b"], "--host-header"),
        (["-p", "tls/443", "--sni", "a.example", "--control-name", "a.example"], "control"),
        (["-p", "tls/443", "--sni", "a.example", "--control-name", ""], "--control-name"),
        (["-p", "tls/0"], "1 to 65535"),
        (["-p", "tls/443,80"], "tls/PORT, http/PORT or dns/PORT"),
        (["-p", "tls/https"], "tls/PORT, http/PORT or dns/PORT"),
        (["-p", "dns/53"], "(--qname NAME, or qname in a configuration)"),
        (["-p", "dns/53", "--qname", "a\x00b"], "NUL byte"),
        (["-p", "dns/53", "--qname", "a\u202eb.example"], "--qname"),
        (["-p", "dns/53", "--qname", "-" * 70], "--qname"),
        (["-p", "dns/53", "--qname", "a.example", "--qtype", "ANY"], "--qtype"),
        (["-p", "dns/99999", "--qname", "a.example"], "1 to 65535"),
    ],
)
def test_bad_request_options_are_one_line(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "198.18.0.1", *args, "--report", "-n"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "\x1b" not in err, err
