"""The HTML report renders in headless Chromium (Debian package `chromium`): one self-contained
file whose charts draw something, with no network loads."""
import os
import pathlib
import shutil
import subprocess

from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("ELEVFLYT_BIN", str(REPO / "target" / "debug" / "elevflyt"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_html_report_renders_in_headless_chromium(tmp_path):
    w = tmp_path / "lake"
    subprocess.run([BIN, "run", str(REPO / "pipelines" / "voss.toml"), "--warehouse", str(w)], check=True, capture_output=True)
    html = tmp_path / "rapport.html"
    subprocess.run([BIN, "report", str(REPO / "pipelines" / "voss.toml"), "--warehouse", str(w),
                    "--format", "html", "--out", str(html)], check=True)
    png = tmp_path / "rapport.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1200",
                    f"--screenshot={png}", html.as_uri()], check=True, capture_output=True, timeout=120)
    img = Image.open(png).convert("RGB")
    pixels = list(img.getdata())
    non_white = sum(1 for p in pixels if p != (255, 255, 255))
    colours = len(set(pixels))
    blue_bars = sum(1 for p in pixels if p == (0x2F, 0x6F, 0xB0))
    print(f"chromium rendered {img.size[0]}x{img.size[1]}: {non_white} non-white pixels, {colours} colours, "
          f"{blue_bars} pixels of the pupils-per-class bars")
    assert non_white > 0.02 * len(pixels)
    assert blue_bars > 1000, "the pupils-per-class chart was drawn"
    shutil.copy(png, "/tmp/rapport-voss.png")
