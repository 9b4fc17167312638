"""The operator pages of `elevflyt serve` in a real browser (Playwright driving Debian's
Chromium): a Bergen operator logs in, reads the overview, opens a school with deviations,
approves the transfer; the official Delta Sharing client then gets the approved version and its
read shows in the disclosure log on the page. The Bergen operator gets 403 for Voss, a POST
without the CSRF token fails, a logged-out visitor goes to the login page. axe-core checks every
page (no serious or critical violations), every page's HTML is scanned for fødselsnummer, and
each page is photographed at 1280 px and 390 px (into $SCREENSHOTS, default target/screenshots).

Run by `make test-sharing` (part of `make test`) with ELEVFLYT_BIN set.
"""
import json
import os
import pathlib
import re
import subprocess
import time

import delta_sharing
import pytest
from playwright.sync_api import sync_playwright

from test_official_client import BIN, Server, free_port, run

REPO = pathlib.Path(__file__).resolve().parents[2]
AXE = REPO / "tests" / "ui" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = pathlib.Path(os.environ.get("SCREENSHOTS", REPO / "target" / "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "korrekt hest batteri stift"
FNR = re.compile(r"(?<!\d)\d{11}(?!\d)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The sample pipelines (Bergen in two deliveries, Voss), a share that serves only approved
    versions, operators for Bergen and Voss, and the server."""
    tmp = tmp_path_factory.mktemp("pages")
    for name in ["bergen", "voss"]:
        body = (REPO / "pipelines" / f"{name}.toml").read_text()
        body = body.replace('"../sample_data', f'"{REPO}/sample_data').replace('"../lakehouse"', f'"{tmp}/lake"')
        (tmp / f"{name}.toml").write_text(body)
    run("run", str(tmp / "bergen.toml"), "--until", "2026-01-15")
    run("run", str(tmp / "bergen.toml"))
    run("run", str(tmp / "voss.toml"))
    port = free_port()
    sharing = tmp / "sharing.toml"
    sharing.write_text(f"""
[server]
listen = "127.0.0.1:{port}"

[[share]]
name = "vgs_inntak"
approved_only = true
[[share.schema]]
pipeline = "bergen.toml"
tables = ["elevliste_vgs"]
history = true
[[share.schema]]
pipeline = "voss.toml"
tables = ["elevliste_vgs"]
history = true

[[recipient]]
name = "vestland"
shares = ["vgs_inntak"]
rows = {{ fylkesnummer = "46" }}
""")
    for user, kommune in [("bergen", "4601"), ("voss", "4621")]:
        p = subprocess.run([BIN, "share", "user", str(sharing), "--name", user, "--kommune", kommune],
                           input=PASSWORD + "\n", capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    profile = tmp / "vestland.share"
    run("share", "token", str(sharing), "--recipient", "vestland", "--out", str(profile))
    server = Server(sharing)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield {"base": f"http://127.0.0.1:{port}", "profile": profile, "browser": browser, "tmp": tmp}
        browser.close()
    server.stop()


def check(page, name, axe_results):
    """axe-core on the page, the fødselsnummer scan, and the screenshots at two widths."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [(v["id"], v["impact"], len(v["nodes"])) for v in result["violations"]
           if v["impact"] in ("serious", "critical")]
    axe_results[name] = {"violations": len(result["violations"]), "serious_or_critical": bad}
    assert not bad, f"{name}: {bad}"
    html = page.content()
    assert not FNR.search(re.sub(r"<style.*?</style>|<svg.*?</svg>", "", html, flags=re.S)), \
        f"{name}: an 11-digit number in the page"
    for width, height in [(1280, 900), (390, 844)]:
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def login(page, base, user):
    page.goto(f"{base}/kommune/4601")
    assert page.url.endswith("/login"), page.url
    page.get_by_label("Brukarnamn").fill(user)
    page.get_by_label("Passord").fill(PASSWORD)
    page.get_by_role("button", name="Logg inn").click()


def test_a_bergen_operator_approves_and_the_county_gets_that_version(site):
    base, axe_results = site["base"], {}
    page = site["browser"].new_page(viewport={"width": 1280, "height": 900})
    login(page, base, "bergen")
    assert page.url == f"{base}/", page.url
    check(page, "heim", axe_results)
    page.goto(f"{base}/kommune/4601")
    assert page.get_by_role("heading", name="Oversikt – kommune 4601").is_visible()
    check(page, "oversikt", axe_results)

    # A school with an open deviation: the work list, masked.
    page.get_by_role("link", name="46552").click()
    assert page.get_by_role("heading", name="Skule 46552").is_visible()
    assert "fnr_ugyldig" in page.content() and "*****" in page.content()
    check(page, "skule", axe_results)
    page.goto(f"{base}/kommune/4601/koyringar")
    check(page, "koyringar", axe_results)

    # Before the approval the county gets nothing; after it, the approved version.
    url = f"{site['profile']}#vgs_inntak.bergen_kommune.elevliste_vgs"
    with pytest.raises(Exception) as refused:
        delta_sharing.load_as_pandas(url)
    assert "403" in str(refused.value) and "NOT_APPROVED" in str(refused.value)
    page.goto(f"{base}/kommune/4601/overforing")
    check(page, "overforing", axe_results)
    button = page.get_by_role("button", name=re.compile("Lista er klar: godkjenn versjon"))
    approved = int(button.first.inner_text().rsplit(" ", 1)[1])
    button.first.click()
    assert page.url.endswith("/kommune/4601/overforing")
    assert f"Godkjend versjon: {approved}" in page.content()
    assert delta_sharing.get_table_version(url) == approved
    pupils = delta_sharing.load_as_pandas(url)
    print(f"approved version {approved}: the county reads {len(pupils)} pupils")
    assert len(pupils) == 28 and set(pupils.fylkesnummer) == {"46"}
    time.sleep(1.5)  # the disclosure log is written once a second
    page.reload()
    assert re.search(r"<td>vestland</td><td>query</td><td>%d</td>" % approved, page.content()), \
        "the county's read in the disclosure log on the page"

    # Voss is not Bergen's: pages and approvals are refused.
    assert page.goto(f"{base}/kommune/4621").status == 403
    assert page.goto(f"{base}/kommune/4621/overforing").status == 403
    page.goto(f"{base}/kommune/4601/overforing")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    form = {"deling": "vgs_inntak", "skjema": "voss_herad", "tabell": "elevliste_vgs", "versjon": "1"}
    assert page.request.post(f"{base}/kommune/4621/godkjenn", form={**form, "csrf": csrf}).status == 403
    # A POST without the CSRF token fails.
    bergen = {**form, "skjema": "bergen_kommune"}
    r = page.request.post(f"{base}/kommune/4601/godkjenn", form=bergen, max_redirects=0)
    assert r.status == 403, r.status

    # Logged out: sent to the login page.
    page.get_by_role("button", name=re.compile("Logg ut")).click()
    page.goto(f"{base}/kommune/4601")
    assert page.url.endswith("/login")
    check(page, "login", axe_results)
    print("axe:", json.dumps(axe_results))
    print("screenshots:", sorted(p.name for p in SHOTS.glob("*.png")))
