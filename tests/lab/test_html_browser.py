"""The HTML report of a real lab run, opened from disk in a real headless Chromium (run
inside the lab's client namespace, which has no route anywhere, with every host name
mapped to 'not found'): the DOM holds the verdicts and the hop matrix, the page asks for
nothing from any host (Chromium's network log, checked against a page that does), and a
screenshot shows a page, not a blank."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from reachtest.lab import netns
from tests.lab.conftest import Lab, MakeLab
from tests.lab.test_trace_cli import trace_in
from tests.unit.report.test_html import parsed

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def chromium(lab: Lab, tmp_path: Path, *args: str) -> tuple[str, list[dict[str, str]]]:
    """Run Chromium in the lab's client; its stdout and the requests its pages made."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    log = profile.with_suffix(".netlog.json")
    argv = [
        exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--log-net-log={log}",
        "--net-log-capture-mode=Everything", *args,
    ]  # fmt: skip
    with netns.entered(lab.client):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, page_requests(log)


def page_requests(log: Path) -> list[dict[str, str]]:
    """URL requests started on behalf of a page opened from file:// (Chromium's own
    background requests have another network isolation key)."""
    netlog = json.loads(log.read_text())
    kinds = {number: name for name, number in netlog["constants"]["logEventTypes"].items()}
    return [
        event["params"]
        for event in netlog["events"]
        if kinds.get(event["type"]) == "URL_REQUEST_START_JOB"
        and "file://" in event["params"].get("network_isolation_key", "")
    ]


@pytest.fixture
def report(make_lab: MakeLab, tmp_path: Path) -> tuple[Lab, Path]:
    lab = make_lab("combo")
    html = tmp_path / "report.html"
    done = trace_in(
        lab, "server", "-4", "-p", "tcp/22,80,443,8080", "-p", "udp/53",
        "-c", "3", "-i", "0.2", "--html", str(html),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # combo blocks services: exit 1
    return lab, html


def test_chromium_shows_the_verdicts_and_the_hop_matrix(
    report: tuple[Lab, Path], tmp_path: Path
) -> None:
    lab, html = report
    dom, requests = chromium(lab, tmp_path, "--dump-dom", html.as_uri())
    tags = parsed(dom)
    cards = [a["class"] for t, a in tags.tags if t == "div" and "card" in (a.get("class") or "")]
    assert cards.count("card service bad") == 3  # udp/53, tcp/443, tcp/8080
    assert cards.count("card service ok") == 3  # icmp, tcp/22, tcp/80
    for words in ("filtered", "admin-prohibited", "closed", "reset", "syn-ack"):
        assert f">{words}<" in dom, words
    rows = [a for t, a in tags.tags if t == "tr"]
    assert len(rows) == 1 + 6  # the header and one row per hop
    assert dom.count('<td class="cell') == 6 * 6  # a cell per hop and flow
    assert dom.count('<td class="cell m-') >= 6 * 5  # coloured unless not probed there
    assert "m-prohib" in dom and "m-silent" in dom and "m-forged" in dom
    assert dom.count("<svg") >= 2  # the path diagram and the chart, drawn
    assert requests == []


def test_the_page_makes_no_request_and_the_check_would_see_one(
    report: tuple[Lab, Path], tmp_path: Path
) -> None:
    lab, html = report
    _, requests = chromium(lab, tmp_path, "--dump-dom", html.as_uri())
    assert requests == []
    control = tmp_path / "control.html"
    control.write_text(
        html.read_text().replace(
            "</body>", '<img src="http://reachtest-control.invalid/x.png"></body>'
        )
    )
    _, requests = chromium(lab, tmp_path, "--dump-dom", control.as_uri())
    assert [r["url"] for r in requests] == ["http://reachtest-control.invalid/x.png"]


def test_a_screenshot_of_the_report_is_not_blank(report: tuple[Lab, Path], tmp_path: Path) -> None:
    lab, html = report
    shot = tmp_path / "report.png"
    chromium(lab, tmp_path, "--window-size=1200,1800", f"--screenshot={shot}", html.as_uri())
    pixels = image.imread(str(shot))
    assert pixels.shape[:2] == (1800, 1200)
    colours = np.unique(pixels[..., :3].reshape(-1, 3).round(2), axis=0)
    assert len(colours) > 50  # text, coloured cells, chart lines
    dark = (pixels[..., :3].mean(axis=2) < 0.5).mean()
    assert 0.005 < dark < 0.5  # ink on a light page, not an empty or a black one
