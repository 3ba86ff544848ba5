"""The Risk-O-Meter page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium),
against a real gunicorn: upload the sample test file, see coloured rows sorted by risk, download the
scored CSV, and save screenshots (copied to /tmp/riskometer.png and /tmp/riskometer-green.png for a person
to look at)."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fullprocess
import localserver
from risk.core.bands import band_thresholds
from risk.core.settings import Config
from risk.data import sample
from risk.registry import calllists, versions
from tests.conftest import (
    SCORES_WARNING,
    UNINFORMATIVE_WARNING,
    deploy_uninformative_version,
    import_or_fail_in_ci,
    rewrite_config,
    skip_or_fail_in_ci,
    write_call_list,
)

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install -y chromium chromium-driver (Debian) and pip install selenium (requirements.txt)"
SCREENSHOT_COPY = Path("/tmp/riskometer.png")
WAIT_SECONDS = 60  # upper bound for the page to react; the test does not time anything
PAGE_ROWS = 50  # riskometer.js's page

webdriver = import_or_fail_in_ci("selenium.webdriver", f"selenium is not installed: {INSTALL_HINT}")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory):
    """One headless Chromium for the module's tests (starting one takes seconds); each test gets
    its own tab and downloads folder from ``browser``."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            skip_or_fail_in_ci(f"{program} is absent: {INSTALL_HINT}")
    folder = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1100",
        f"--user-data-dir={folder / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(folder), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium, tmp_path: Path):
    """The module's Chromium in a new tab, the earlier test's tab closed (so nothing a page kept in
    sessionStorage, such as a token, carries over), downloading into this test's own folder."""
    earlier = chromium.current_window_handle
    chromium.switch_to.new_window("tab")
    tab = chromium.current_window_handle
    chromium.switch_to.window(earlier)
    chromium.close()
    chromium.switch_to.window(tab)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    chromium.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    chromium.downloads = downloads
    return chromium


RESULT_CELLS = (
    "return Array.from(document.querySelectorAll('#results-table tbody tr'))"
    ".map(tr => [tr.className, Array.from(tr.cells).map(td => td.textContent)]);"
)


def upload_and_wait(driver, csv_path: Path) -> list:
    driver.find_element(By.ID, "csv-file").send_keys(str(csv_path))
    driver.find_element(By.ID, "score-button").click()
    WebDriverWait(driver, WAIT_SECONDS).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#results-table tbody tr"))
    )
    return driver.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")


@contextlib.contextmanager
def opened_page(
    driver,
    config: Config,
    tmp_path: Path,
    token: str = "",
    shows: tuple[str, str] = ("model-name", "decision threshold"),
) -> Iterator[str]:
    """The page of ``config``'s API (``token`` its API_TOKEN), open once the element ``shows[0]`` says ``shows[1]``
    (by default: once /model has named the model served)."""
    with localserver.gunicorn_server(
        config.path, workers=1, env={"API_TOKEN": token}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        driver.get(url + "/")
        WebDriverWait(driver, WAIT_SECONDS).until(ec.text_to_be_present_in_element((By.ID, shows[0]), shows[1]))
        yield url


def test_upload_the_test_file_and_see_clients_sorted_by_risk_in_bands(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    test_file = deployed_project.test_data_folder / "testdata.csv"
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": ""}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        browser.get(url + "/")
        WebDriverWait(browser, WAIT_SECONDS).until(ec.text_to_be_present_in_element((By.ID, "model-version"), "v1"))
        rows = upload_and_wait(browser, test_file)
        screenshot = tmp_path / "riskometer.png"
        browser.save_screenshot(str(screenshot))
        shutil.copy(screenshot, SCREENSHOT_COPY)

        # Paged: 50 rows a page, the pager above and below the table saying where the reader is.
        assert len(rows) == PAGE_ROWS
        assert pager_label(browser, "results") == "Page 1 of 20 · rows 1–50 of 1000"
        assert not browser.find_element(By.CSS_SELECTOR, '[data-pager="results"] .pager-prev').is_enabled()
        height = browser.execute_script("return document.documentElement.scrollHeight")
        assert height < 5000, f"the page is {height} pixels tall: the rows are not paged"
        table = every_page(
            browser, "results", "[tr.className, parseFloat(tr.cells[2].textContent), tr.cells[5].textContent]"
        )
        assert pager_label(browser, "results") == "Page 20 of 20 · rows 951–1000 of 1000"
        assert not browser.find_element(By.CSS_SELECTOR, '[data-pager="results"] .pager-next').is_enabled()
        assert len(table) == 1000
        assert [rank for rank, _, _, _ in table] == list(range(1, 1001))
        bands = [band for _, band, _, _ in table]
        risks = [risk for _, _, risk, _ in table]
        assert {"band-red", "band-amber", "band-green"} <= set(bands)
        assert risks == sorted(risks, reverse=True)
        assert bands[0] == "band-red" and bands[-1] == "band-green"
        # A client the model flags ("likely to leave") is never green, and the legend says why.
        decisions = [(band, decision) for _, band, _, decision in table]
        assert not [band for band, decision in decisions if decision == "likely to leave" and band == "band-green"]
        assert {band for band, decision in decisions if decision == "likely to stay"} == {"band-green"}
        assert "Derived from the model's decision threshold" in browser.find_element(By.ID, "band-legend").text
        assert not browser.find_element(By.ID, "model-verdict").is_displayed()
        # Back, by the bar below the table, to the page where amber turns green, for a second picture.
        green_page = bands.index("band-green") // PAGE_ROWS + 1
        for _ in range(20 - green_page):
            browser.find_elements(By.CSS_SELECTOR, '[data-pager="results"] .pager-prev')[-1].click()
        first_row = (green_page - 1) * PAGE_ROWS + 1
        assert pager_label(browser, "results") == f"Page {green_page} of 20 · rows {first_row}–{first_row + 49} of 1000"
        browser.execute_script(
            "document.querySelector('#results-table tr.band-green').scrollIntoView({block: 'center'});"
        )
        browser.save_screenshot(str(tmp_path / "riskometer-green.png"))
        shutil.copy(tmp_path / "riskometer-green.png", SCREENSHOT_COPY.with_name("riskometer-green.png"))
        browser.find_element(By.ID, "score-button").click()  # a new answer starts again at its first page
        WebDriverWait(browser, WAIT_SECONDS).until(lambda d: pager_label(d, "results").startswith("Page 1 of 20"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results-table tbody tr")
        colour = rows[0].find_element(By.CSS_SELECTOR, ".pill").value_of_css_property("background-color")
        assert colour != rows[-1].find_element(By.CSS_SELECTOR, ".pill").value_of_css_property("background-color")
        assert "1000 clients scored by model v1" in browser.find_element(By.ID, "summary-text").text
        assert browser.find_element(By.ID, "model-version").text == "v1"

        browser.find_element(By.ID, "download-button").click()  # every row, not only the page shown
        scored = wait_for_file(browser.downloads, "scored_clients_v1.csv")
    lines = list(csv.DictReader(io.StringIO(scored.read_text(encoding="utf-8"))))
    assert len(lines) == 1000
    assert list(lines[0]) == ["rank", "row", "corporation", "risk", "band", "prediction", "model_version"]
    assert {line["model_version"] for line in lines} == {"v1"}
    assert float(lines[0]["risk"]) >= float(lines[-1]["risk"])


def test_the_page_asks_for_the_token_when_one_is_required(browser, deployed_project: Config, tmp_path: Path) -> None:
    head = deployed_project.test_data_folder / "head.csv"
    head.write_text(
        "".join((deployed_project.test_data_folder / "testdata.csv").read_text().splitlines(keepends=True)[:6])
    )
    with opened_page(browser, deployed_project, tmp_path, "page-token", ("model-version", "enter your API token")):
        token = browser.find_element(By.ID, "api-token")
        assert token.is_displayed()
        browser.find_element(By.ID, "csv-file").send_keys(str(head))
        browser.find_element(By.ID, "score-button").click()
        WebDriverWait(browser, WAIT_SECONDS).until(ec.visibility_of_element_located((By.ID, "error")))
        # The page speaks to a client manager; the API's 401 wording (an Authorization header) is for programs.
        error = browser.find_element(By.ID, "error")
        assert "Enter the API token you were given" in error.text
        assert "Bearer" not in error.text and "Authorization" not in error.text
        token.send_keys("not-the-token")
        browser.find_element(By.ID, "score-button").click()
        WebDriverWait(browser, WAIT_SECONDS).until(ec.text_to_be_present_in_element((By.ID, "error"), "not accepted"))
        token.clear()
        token.send_keys("page-token")
        # Blank the legend's thresholds, so that only the answers (the prediction's, then /model's) write them back.
        browser.execute_script(
            "document.querySelectorAll('#band-legend .legend-amber').forEach(s => { s.textContent = ''; });"
        )
        rows = upload_and_wait(browser, head)
        assert len(rows) == 5
        # Once a token is accepted, the badge names the model served, as it does where no token is needed.
        WebDriverWait(browser, WAIT_SECONDS).until(
            ec.text_to_be_present_in_element((By.ID, "model-name"), "decision threshold")
        )
        assert browser.find_element(By.ID, "model-version").text == "v1"
        threshold = browser.find_element(By.ID, "model-name").text.split("decision threshold ")[1]
        assert f"below {100 * float(threshold):.1f}%" in browser.find_element(By.ID, "band-legend").text
        # /model answered after the rows were drawn (score() asks for it only then): the legend's update
        # once replaced every amber and red row with the bare threshold ("30.0").
        cells = browser.execute_script(RESULT_CELLS)
        assert any(band != "band-green" for band, _ in cells)  # rows the old bug would have emptied
        assert all(len(texts) == 6 and texts[2].endswith("%") for _, texts in cells), cells


def test_the_download_neutralises_formula_cells(browser, deployed_project: Config, tmp_path: Path) -> None:
    formulas = ["=cmd|' /C calc'!A0", "+SUM(A1:A2)", "-2+3", '@HYPERLINK("x")']
    clients = tmp_path / "formulas.csv"
    lines = ["corporation,lastmonth_activity,lastyear_activity,number_of_employees"]
    lines += [f'"{name.replace(chr(34), chr(34) * 2)}",{i},{100 + i},{10 + i}' for i, name in enumerate(formulas)]
    clients.write_text("\n".join(lines) + "\n")
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": ""}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        browser.get(url + "/")
        WebDriverWait(browser, WAIT_SECONDS).until(ec.text_to_be_present_in_element((By.ID, "model-version"), "v1"))
        assert len(upload_and_wait(browser, clients)) == len(formulas)
        browser.find_element(By.ID, "download-button").click()
        scored = wait_for_file(browser.downloads, "scored_clients_v1.csv")
    names = [line["corporation"] for line in csv.DictReader(io.StringIO(scored.read_text(encoding="utf-8")))]
    assert sorted(names) == sorted("'" + name for name in formulas)


def test_the_badge_says_no_better_than_chance_with_the_warnings(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    assert deploy_uninformative_version(deployed_project) == "v2"
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": ""}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        browser.get(url + "/")
        WebDriverWait(browser, WAIT_SECONDS).until(ec.text_to_be_present_in_element((By.ID, "model-version"), "v2"))
        verdict = browser.find_element(By.ID, "model-verdict")
        assert verdict.is_displayed() and verdict.text == "no better than chance"
        warnings = browser.find_element(By.ID, "model-warnings")
        assert warnings.is_displayed()
        assert [li.text for li in warnings.find_elements(By.TAG_NAME, "li")] == [UNINFORMATIVE_WARNING, SCORES_WARNING]
        browser.save_screenshot(str(tmp_path / "uninformative.png"))
        shutil.copy(tmp_path / "uninformative.png", SCREENSHOT_COPY.with_name("riskometer-uninformative.png"))


def test_a_page_left_open_across_a_deployment_says_what_the_new_version_is_once_it_scores(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    """/model is asked once when the page opens: rows scored by a version deployed since must come
    with that version's badge and verdict, not the earlier one's."""
    with opened_page(browser, deployed_project, tmp_path):
        assert not browser.find_element(By.ID, "model-verdict").is_displayed()
        assert deploy_uninformative_version(deployed_project) == "v2"  # while the page stays open
        upload_and_wait(browser, deployed_project.test_data_folder / "testdata.csv")
        assert "scored by model v2" in browser.find_element(By.ID, "summary-text").text
        WebDriverWait(browser, WAIT_SECONDS).until(ec.visibility_of_element_located((By.ID, "model-verdict")))
        assert browser.find_element(By.ID, "model-verdict").text == "no better than chance"
        assert browser.find_element(By.ID, "model-version").text == "v2"


def pager_label(driver, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f'[data-pager="{name}"] .pager-label').text


def every_page(driver, name: str, row_expression: str) -> list[list]:
    """[rank shown, *row_expression] (JavaScript of ``tr``, an array) for every row of every page of
    table ``name``, from the page shown to the last: one round trip a page (a WebDriver call a row is slow)."""
    script = (
        f"return Array.from(document.querySelectorAll('#{name}-table tbody tr'))"
        f".map(tr => [parseInt(tr.cells[0].textContent, 10)].concat({row_expression}));"
    )
    rows: list[list] = []
    while True:
        rows += driver.execute_script(script)
        button = driver.find_element(By.CSS_SELECTOR, f'[data-pager="{name}"] .pager-next')
        if not button.is_displayed() or not button.is_enabled():
            return rows
        label = pager_label(driver, name)
        button.click()
        WebDriverWait(driver, WAIT_SECONDS).until(lambda d: pager_label(d, name) != label)


def wait_for_file(folder: Path, name: str) -> Path:
    """The downloaded file, once Chromium has finished writing it (bounded wait, nothing timed)."""
    deadline = time.monotonic() + WAIT_SECONDS
    path = folder / name
    while time.monotonic() < deadline:
        if path.exists() and not list(folder.glob("*.crdownload")):
            return path
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded; the folder holds {sorted(p.name for p in folder.iterdir())}")


# ----------------------------------------------------------------------------- the call list view

CALL_IDS = [f"client{i:03d}" for i in range(240)]


def call_list_risks(step: int, clients: int = len(CALL_IDS)) -> list[float]:
    """Distinct risks in an order that differs with ``step`` (a number prime to 241)."""
    return [((i * step) % 241) / 241 for i in range(1, clients + 1)]


def open_call_list(driver, url: str) -> None:
    """The call list view once both of its fetches have answered: /calllist (the rows) and /model (the
    badge), in whichever order they came; /model answering last once emptied the amber and red rows."""
    driver.get(url + "/#calllist")
    WebDriverWait(driver, WAIT_SECONDS).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "#calllist-table tbody tr"))
    )
    WebDriverWait(driver, WAIT_SECONDS).until(
        ec.text_to_be_present_in_element((By.ID, "model-name"), "decision threshold")
    )


def test_the_call_list_view_pages_the_budget_with_reasons_changes_and_warnings(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    write_call_list(deployed_project, CALL_IDS[:200], call_list_risks(37, 200), stamp="20261207T080000Z")
    write_call_list(
        deployed_project,
        CALL_IDS,
        call_list_risks(53),
        stamp="20261207T090000Z",
        budget=80,
        warnings=[UNINFORMATIVE_WARNING],
    )
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": ""}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        open_call_list(browser, url)
        assert not browser.find_element(By.ID, "upload-form").is_displayed()
        # The model's warnings at the top, then what the list is, by which version and when.
        warnings = browser.find_element(By.ID, "calllist-warnings")
        assert warnings.is_displayed() and warnings.text == UNINFORMATIVE_WARNING
        summary = browser.find_element(By.ID, "calllist-summary").text
        assert summary == "The 80 clients to call first, of 240, riskiest first: model v1, scored 2026-12-07 09:00 UTC."
        facts = browser.find_element(By.ID, "calllist-facts").text
        flagged = int(calllists.latest_call_list(deployed_project)[1]["flagged"].sum())
        assert (
            f"{flagged} clients are flagged by the model; {flagged - 80} flagged clients fall beyond the budget of 80 calls."
            in facts
        )
        assert "Calling the first 80 clients reaches" in facts
        assert "Since the previous list (20261207T080000Z_v1.csv):" in facts
        assert "Why: exact contributions of the logistic regression" in facts
        browser.save_screenshot(str(tmp_path / "calllist.png"))
        shutil.copy(tmp_path / "calllist.png", SCREENSHOT_COPY.with_name("riskometer-calllist.png"))

        # The budget's 80 clients in pages of 50, each with its reasons and its change since the previous list.
        assert pager_label(browser, "calllist") == "Page 1 of 2 · rows 1–50 of 80"
        shown = every_page(
            browser,
            "calllist",
            "[tr.cells[1].textContent, Array.from(tr.cells[4].querySelectorAll('li')).map(li => li.textContent), tr.cells[5].textContent]",
        )
        assert pager_label(browser, "calllist") == "Page 2 of 2 · rows 51–80 of 80"
        expected = calllists.latest_call_list(deployed_project)[1].head(80)  # as the list's reader types it
        assert [rank for rank, _, _, _ in shown] == expected["rank"].tolist()
        assert [name for _, name, _, _ in shown] == expected["corporation"].tolist()
        words = {"new": "new on the list", "same": "same place", "up": "▲ up from {}", "down": "▼ down from {}"}
        for (_, _, reasons, change), row in zip(shown, expected.to_dict("records")):
            assert reasons == [row[c] for c in ("reason_1", "reason_2", "reason_3") if row[c]]
            assert change == words[row["change"]].format(row["previous_rank"])
        assert {"new", "up", "down"} <= set(expected["change"])
        no_reason = browser.find_element(By.XPATH, "//td[contains(., 'no feature raises')]")
        assert no_reason.is_displayed()

        browser.find_element(By.ID, "calllist-download").click()
        downloaded = wait_for_file(browser.downloads, "calllist_20261207T090000Z_v1.csv")
        assert downloaded.read_bytes() == (deployed_project.root / "calllists" / "latest.csv").read_bytes()

        # Back to the upload view and forth: the tabs are links, so the call list can be bookmarked.
        browser.find_element(By.ID, "tab-upload").click()
        WebDriverWait(browser, WAIT_SECONDS).until(ec.visibility_of_element_located((By.ID, "upload-form")))
        assert not browser.find_element(By.ID, "calllist-view").is_displayed()
        browser.find_element(By.ID, "tab-calllist").click()
        WebDriverWait(browser, WAIT_SECONDS).until(ec.visibility_of_element_located((By.ID, "calllist-table")))


def test_a_list_without_reasons_does_not_say_no_feature_raises_the_risk(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    # A version that cannot be explained gets its list with blank reasons and a method "none: ...";
    # the page read any method as "reasons were looked for" and told managers of every client that
    # no feature raises its risk, which nobody had measured.
    write_call_list(
        deployed_project, CALL_IDS[:10], call_list_risks(37, 10), method="none: v1 cannot be explained (no master)"
    )
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": ""}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        open_call_list(browser, url)
        WebDriverWait(browser, WAIT_SECONDS).until(
            ec.text_to_be_present_in_element((By.ID, "calllist-table"), "no reasons in this list")
        )
        why = browser.execute_script(
            "return Array.from(document.querySelectorAll('#calllist-table tbody tr')).map(tr => tr.cells.length && tr.cells[4].textContent);"
        )
        assert why == ["no reasons in this list"] * 10
        table = browser.find_element(By.ID, "calllist-table").text  # as displayed, too
        assert table.count("no reasons in this list") == 10 and "no feature raises" not in table


def test_the_call_list_view_says_how_to_get_a_list_and_asks_for_the_token(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": "page-token"}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        browser.get(url + "/#calllist")
        error = browser.find_element(By.ID, "calllist-error")
        WebDriverWait(browser, WAIT_SECONDS).until(
            ec.text_to_be_present_in_element((By.ID, "calllist-error"), "API token")
        )
        assert "Enter the API token you were given" in error.text and "open the call list again" in error.text
        browser.find_element(By.ID, "api-token").send_keys("page-token\n")  # Enter opens the list
        WebDriverWait(browser, WAIT_SECONDS).until(
            ec.text_to_be_present_in_element((By.ID, "calllist-error"), "no call list yet")
        )
        assert "set client_book" in error.text
        assert not browser.find_element(By.ID, "calllist").is_displayed()

        # The list a run writes from the sample's client book, with its reasons.
        booked = rewrite_config(deployed_project, client_book=sample.SAMPLE_BOOK)
        assert fullprocess.main(["--config", str(booked.path)]) == 0
        browser.find_element(By.ID, "calllist-load").click()
        WebDriverWait(browser, WAIT_SECONDS).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, "#calllist-table tbody tr"))
        )
        assert not error.is_displayed()
        assert (
            "This is the first list: every client on it is new." in browser.find_element(By.ID, "calllist-facts").text
        )
        first = browser.find_element(By.CSS_SELECTOR, "#calllist-table tbody tr")
        reasons = [li.text for li in first.find_elements(By.CSS_SELECTOR, "td ul.reasons li")]
        assert reasons == [r for r in calllists.latest_call_list(booked)[1].loc[0, list(calllists.REASON_COLUMNS)] if r]
        assert reasons and reasons[0].split(" ")[1] == "="  # "<feature> = <value> ...: +effect"
        browser.save_screenshot(str(tmp_path / "calllist-sample.png"))
        shutil.copy(tmp_path / "calllist-sample.png", SCREENSHOT_COPY.with_name("riskometer-calllist-sample.png"))
        assert pager_label(browser, "calllist") == "Page 1 of 2 · rows 1–50 of 100"


def test_a_page_served_before_the_first_model_shows_its_bands_once_one_is_deployed(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    deployed = deployed_project.deployment_folder
    aside = deployed.with_name(deployed.name + "-aside")
    deployed.rename(aside)  # no model yet: the page is served with the legend's no-model wording
    with localserver.gunicorn_server(
        deployed_project.path, workers=1, env={"API_TOKEN": ""}, log_path=tmp_path / "gunicorn.log"
    ) as url:
        browser.get(url + "/")
        WebDriverWait(browser, WAIT_SECONDS).until(ec.text_to_be_present_in_element((By.ID, "model-version"), "none"))
        assert "once a model is deployed" in browser.find_element(By.ID, "band-legend").text
        aside.rename(deployed)  # the first model is deployed while the page stays open
        upload_and_wait(browser, deployed_project.test_data_folder / "testdata.csv")
        WebDriverWait(browser, WAIT_SECONDS).until(ec.text_to_be_present_in_element((By.ID, "model-version"), "v1"))
        legend = browser.find_element(By.ID, "band-legend").text
        threshold = browser.find_element(By.ID, "model-name").text.split("decision threshold ")[1]
        assert f"below {100 * float(threshold):.1f}%" in legend, legend
        assert "once a model is deployed" not in legend and "Derived from the model's decision threshold" in legend


def test_the_badge_and_legend_name_the_model_that_cut_the_rows_beside_them(
    browser, deployed_project: Config, tmp_path: Path
) -> None:
    """The page asks /model once: a page left open while another version (another threshold) was
    deployed must not show that version's rows beside the earlier one's threshold and bands."""
    threshold = versions.load_deployed_model(deployed_project).model.threshold
    bands = band_thresholds(deployed_project, threshold)
    with opened_page(browser, deployed_project, tmp_path):
        # What the page would show had /model answered for an earlier version with another threshold.
        browser.execute_script(
            "document.getElementById('model-name').textContent = 'an earlier model · decision threshold 0.999';"
            "document.querySelectorAll('#band-legend .legend-amber, #band-legend .legend-red')"
            ".forEach(s => { s.textContent = '99.9'; });"
        )
        upload_and_wait(browser, deployed_project.test_data_folder / "testdata.csv")
        legend = browser.find_element(By.ID, "band-legend").text
        assert "99.9" not in legend, legend
        assert f"below {100 * bands['amber']:.1f}%" in legend and f"red from {100 * bands['red']:.1f}%" in legend
        assert browser.find_element(By.ID, "model-name").text.endswith(f"decision threshold {threshold}")
