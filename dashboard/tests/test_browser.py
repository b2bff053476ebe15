"""The dashboard in a real browser: Debian's Chromium driven by Selenium against a live server.

Run only these with ``make test PYTEST_ARGS="-m browser"``. Without Chromium and its driver
(``apt-get install chromium chromium-driver``; or ``CHROMIUM_BINARY`` / ``CHROMEDRIVER`` naming
them) the tests skip and say so; Selenium never downloads a browser or a driver here.

Every number a panel shows is compared with the read API's answer for the filters the page
sends (``window.dashboard.filtersOf()``), asked by this process on the same database.
``BROWSER_TESTS_REQUIRED=1`` (CI) makes a missing browser an error instead.
``DASHBOARD_SCREENSHOTS=<folder>`` saves the desktop and phone screenshots there (the README's
come from ``DASHBOARD_SCREENSHOTS=docs``).
"""

import csv
import io
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from ingest.seeding import demo_data_seed
from rollups.jobs import rebuild_job_run
from rollups.models import RebuildJob
from rollups.tests.conftest import broker_at, filesystem_broker_options

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_BINARY") or shutil.which("chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
HOW_TO_ENABLE = (
    "browser tests need Chromium and its driver: apt-get install chromium chromium-driver "
    "(or set CHROMIUM_BINARY and CHROMEDRIVER to their paths)"
)
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("BROWSER_TESTS_REQUIRED") == "1":  # CI: a skip would hide the tests
        raise RuntimeError(HOW_TO_ENABLE)
    pytest.skip(HOW_TO_ENABLE, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT_SECONDS = 20
DESKTOP = (1400, 1000)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en-US",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def _page_left_before_the_flush(browser: WebDriver, transactional_db: None) -> Iterator[None]:
    """Each test starts on a blank page with no log left by the one before, and leaves its page
    before its database is flushed (``transactional_db`` is torn down after this): a page still
    loading or polling then would send requests that wait behind the flush, and the 503 they
    end with would be logged into the next test."""
    browser.get("about:blank")
    _console_errors(browser)  # drained
    yield
    browser.get("about:blank")


@pytest.fixture
def seeded(settings: Any) -> None:
    """A little demo data, reaching today, absorbed into the summaries."""
    settings.ANALYTICS_PUBLIC_READ = False
    demo_data_seed(views=4000, authors=30, blogs=60, seed=11)
    call_command("run_rollups", verbosity=0)


@pytest.fixture
def staff(django_user_model: Any, password: str) -> Any:
    return django_user_model.objects.create_user(
        username="editor", password=password, is_staff=True
    )


def _console_errors(driver: Any) -> list[str]:
    # Chrome's own command (goog:loggingPrefs above), which the WebDriver type does not name.
    entries: list[dict[str, Any]] = driver.get_log("browser")
    return [entry["message"] for entry in entries if entry["level"] == "SEVERE"]


def _generation(driver: WebDriver) -> int:
    value = driver.execute_script("return document.getElementById('dashboard').dataset.generation")
    return int(value or 0)


def _wait_ready(driver: WebDriver, after: int = 0) -> None:
    """Until every panel of a load newer than generation ``after`` is filled."""
    # Right after a sign-in the browser may still show the login page, which has no
    # #dashboard: not ready yet (reading its dataset threw, and WebDriverWait does not retry on
    # a JavaScript error).
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.execute_script(
            "const r = document.getElementById('dashboard');"
            "return r !== null && r.dataset.state === 'ready'"
            " && Number(r.dataset.generation) > arguments[0];",
            after,
        )
    )


def _sign_in(driver: WebDriver, base: str, username: str, password: str) -> None:
    driver.get(f"{base}/")
    assert urlsplit(driver.current_url).path == "/login/"
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password + Keys.ENTER)
    _wait_ready(driver)


def _query(driver: WebDriver) -> dict[str, list[str]]:
    return parse_qs(urlsplit(driver.current_url).query)


def _text(driver: WebDriver, selector: str) -> str:
    text: str = driver.find_element(By.CSS_SELECTOR, selector).text
    return text


def _column(driver: WebDriver, panel: str, index: int) -> list[str]:
    cells = driver.find_elements(By.CSS_SELECTOR, f"#{panel} tbody tr td:nth-child({index})")
    return [cell.get_attribute("textContent") or "" for cell in cells]


def _api(client: APIClient, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        f"/api/analytics/{endpoint}/", body, format="json", HTTP_CACHE_CONTROL="no-cache"
    )
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def _n(value: int) -> str:
    return f"{value:,}"


def _csv_of(driver: WebDriver, panel_id: str) -> list[dict[str, str]]:
    """The rows of a panel's CSV link, fetched by the page itself (its session, if any)."""
    href = driver.find_element(By.CSS_SELECTOR, f"#{panel_id} a.csv").get_attribute("href")
    status, kind, body = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {credentials: 'same-origin'}).then((r) => r.text().then("
        "(text) => done([r.status, r.headers.get('Content-Type'), text])));",
        href,
    )
    assert (status, kind.split(";")[0]) == (200, "text/csv"), (href, status, body[:300])
    return list(csv.DictReader(io.StringIO(body)))


def _assert_panels_match_the_api(driver: WebDriver, client: APIClient) -> None:
    filters: dict[str, Any] = driver.execute_script("return window.dashboard.filtersOf()")
    period = driver.execute_script("return window.dashboard.state.period")
    series_body = dict(filters, **({} if period == "auto" else {"compare_period": period}))
    series = _api(client, "performance", series_body)
    top_blogs = _api(client, "top/blog", filters)
    top_authors = _api(client, "top/user", filters)
    top_countries = _api(client, "top/country", filters)
    countries = _api(client, "blog-views/country", dict(filters, limit=1000))

    total = sum(row["views"] for row in series["results"])
    assert _text(driver, '#panel-headline [data-field="views"]') == _n(total)
    assert _text(driver, '#panel-headline [data-field="blogs"]') == _n(top_blogs["meta"]["total"])
    assert _column(driver, "panel-top-blogs", 2) == [row["title"] for row in top_blogs["results"]]
    assert _column(driver, "panel-top-blogs", 4) == [_n(r["views"]) for r in top_blogs["results"]]
    assert _column(driver, "panel-top-authors", 2) == [
        r["username"] for r in top_authors["results"]
    ]
    assert _column(driver, "panel-top-authors", 4) == [
        _n(r["views"]) for r in top_authors["results"]
    ]
    assert _column(driver, "panel-top-countries", 2) == [
        f"{r['country_name']} ({r['country_code']})" for r in top_countries["results"]
    ]
    assert _column(driver, "panel-countries", 3) == [_n(r["views"]) for r in countries["results"]]
    # Each table's CSV link downloads its whole list for the same filters.
    assert [(r["country_code"], int(r["views"])) for r in _csv_of(driver, "panel-countries")] == [
        (r["country_code"], r["views"]) for r in countries["results"]
    ]
    blogs = [int(r["blog_id"]) for r in _csv_of(driver, "panel-top-blogs")]
    assert blogs[: len(top_blogs["results"])] == [r["blog_id"] for r in top_blogs["results"]]
    authors = [r["username"] for r in _csv_of(driver, "panel-top-authors")]
    assert authors[: len(top_authors["results"])] == [r["username"] for r in top_authors["results"]]
    if series["results"]:
        note = _text(driver, "#series-note")
        adjective = {"day": "daily", "week": "weekly", "month": "monthly", "year": "yearly"}
        granularity = adjective[series["meta"]["granularity"]]
        assert note.startswith(f"{len(series['results'])} {granularity} buckets")


def _screenshot(driver: WebDriver, name: str, size: tuple[int, int]) -> None:
    folder = os.environ.get("DASHBOARD_SCREENSHOTS")
    if not folder:
        return
    driver.set_window_size(*size)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    # The window's height is the page's plus the browser's own frame.
    driver.set_window_size(size[0], min(int(height) + 140, 4000))
    driver.execute_script("window.dispatchEvent(new Event('resize'))")
    Path(folder).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(Path(folder) / f"dashboard-{name}.png"))
    driver.set_window_size(*DESKTOP)


def _change(driver: WebDriver, action: Any) -> None:
    before = _generation(driver)
    action()
    _wait_ready(driver, before)


def test_the_panels_show_the_apis_numbers_and_follow_every_filter(
    browser: WebDriver, live_server: Any, seeded: None, staff: Any, password: str
) -> None:
    client = APIClient()
    client.force_authenticate(staff)
    _sign_in(browser, live_server.url, "editor", password)

    # The default view: the last 30 days, ending in today's partial bucket.
    assert _query(browser) == {}
    _assert_panels_match_the_api(browser, client)
    assert "partial" in _text(browser, "#series-note")
    assert "so far" in _text(browser, '#panel-headline [data-field="last-growth"]')
    assert "All dates and times are UTC" in _text(browser, "#filters")
    _screenshot(browser, "desktop", DESKTOP)
    _screenshot(browser, "phone", PHONE)

    # Date range preset, then granularity.
    _change(browser, lambda: Select(browser.find_element(By.ID, "f-range")).select_by_value("90d"))
    assert _query(browser) == {"range": ["90d"]}
    _assert_panels_match_the_api(browser, client)
    _change(
        browser, lambda: Select(browser.find_element(By.ID, "f-period")).select_by_value("week")
    )
    assert _query(browser) == {"range": ["90d"], "period": ["week"]}
    _assert_panels_match_the_api(browser, client)
    timings = browser.execute_script("return window.dashboard.timings()")
    assert [t["name"] for t in timings].count("dash:filter") == 2

    # Countries: picked by name, and typed as a code, from the keyboard.
    country = browser.find_element(By.ID, "f-country")
    _change(browser, lambda: country.send_keys("Germany (DE)" + Keys.ENTER))
    _change(browser, lambda: country.send_keys("in" + Keys.ENTER))
    assert _query(browser)["country"] == ["DE,IN"]
    _assert_panels_match_the_api(browser, client)
    exclude = browser.find_element(By.ID, "f-exclude")
    _change(browser, lambda: exclude.send_keys("United States" + Keys.ENTER))
    assert _query(browser)["exclude"] == ["US"]
    # A chip removes its country again.
    chip = browser.find_element(By.CSS_SELECTOR, '#f-country-chips button[data-code="IN"]')
    _change(browser, chip.click)
    assert _query(browser)["country"] == ["DE"]
    _assert_panels_match_the_api(browser, client)

    # Author: the top author of the current view.
    author = _column(browser, "panel-top-authors", 2)[0]
    field = browser.find_element(By.ID, "f-author")
    _change(browser, lambda: field.send_keys(author + Keys.TAB))
    assert _query(browser)["author"] == [author]
    _assert_panels_match_the_api(browser, client)

    # A custom range, typed as ISO days; the URL keeps it, and a reload shows the same view.
    _change(
        browser, lambda: Select(browser.find_element(By.ID, "f-range")).select_by_value("custom")
    )
    first_day = (timezone.now().date() - timedelta(days=200)).isoformat()
    start = browser.find_element(By.ID, "f-start")
    # Select all and type over (clearing first would ask for weeks since the earliest view).
    start.send_keys(Keys.CONTROL + "a")
    _change(browser, lambda: start.send_keys(first_day + Keys.TAB))
    query = _query(browser)
    assert query["range"] == ["custom"] and query["start"] == [first_day]
    url = browser.current_url
    browser.get(url)
    _wait_ready(browser)
    assert browser.current_url == url
    assert browser.find_element(By.ID, "f-start").get_attribute("value") == first_day
    _assert_panels_match_the_api(browser, client)

    # All time, no other filter: page the top countries through the breakdown endpoint.
    browser.get(f"{live_server.url}/?range=all")
    _wait_ready(browser)
    _assert_panels_match_the_api(browser, client)
    more = browser.find_element(By.CSS_SELECTOR, "#panel-top-countries .more-button")
    more.click()
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: len(_column(d, "panel-top-countries", 2)) == 20
    )
    page = _api(client, "blog-views/country", {"limit": 20})
    assert _column(browser, "panel-top-countries", 2) == [
        f"{r['country_name']} ({r['country_code']})" for r in page["results"]
    ]
    assert _text(browser, "#panel-top-countries .count").startswith(
        f"Showing 20 of {page['meta']['total']:,} countries"
    )
    # The page's own timing measures, which bench/dashboard_speed.py reports (no goal here:
    # tests are not timed).
    timings = browser.execute_script("return window.dashboard.timings()")
    assert [t["name"] for t in timings].count("dash:load") == 1
    assert all(t["ms"] > 0 for t in timings)

    assert _console_errors(browser) == []


def test_staff_rebuild_from_the_form_runs_to_done(
    browser: WebDriver, live_server: Any, seeded: None, staff: Any, password: str, tmp_path: Path
) -> None:
    browser.delete_all_cookies()
    _sign_in(browser, live_server.url, "editor", password)
    assert _text(browser, '#panel-rollups [data-field="pending"]') == "0"

    with broker_at("filesystem://", filesystem_broker_options(tmp_path / "broker")):
        browser.find_element(By.ID, "r-start").send_keys("2000-01-01")
        browser.find_element(By.CSS_SELECTOR, "#rebuild-form button[type=submit]").click()
        WebDriverWait(browser, WAIT_SECONDS).until(
            lambda d: d.find_element(By.ID, "rebuild-job").get_attribute("data-state") == "queued"
        )
        job_id = _text(browser, '#rebuild-job [data-field="job-id"]')
        # This process stands in for the worker.
        worker = threading.Thread(target=rebuild_job_run, kwargs={"job_id": job_id})
        worker.start()
        worker.join(timeout=60)
        WebDriverWait(browser, WAIT_SECONDS).until(
            lambda d: d.find_element(By.ID, "rebuild-job").get_attribute("data-state") == "done"
        )
    assert browser.find_element(By.ID, "rebuild-progress").get_attribute("value") == "100"
    assert _text(browser, '#rebuild-job [data-field="job-message"]').startswith("Done: 4,000 views")
    assert _console_errors(browser) == []


def test_with_public_read_the_dashboard_opens_without_signing_in(
    browser: WebDriver, live_server: Any, seeded: None, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/?range=7d&country=US")
    _wait_ready(browser)

    assert urlsplit(browser.current_url).path == "/"
    assert browser.find_elements(By.ID, "panel-rollups") == []
    client = APIClient()
    _assert_panels_match_the_api(browser, client)
    chips = browser.find_elements(By.CSS_SELECTOR, "#f-country-chips .chip")
    assert [chip.get_attribute("data-code") for chip in chips] == ["US"]
    assert _console_errors(browser) == []

    # No matching view: each panel says so. A refused question: each says why.
    browser.get(f"{live_server.url}/?author=nobody-writes-this")
    _wait_ready(browser)
    for panel in ("panel-series", "panel-top-blogs", "panel-top-authors", "panel-countries"):
        element = browser.find_element(By.ID, panel)
        assert element.get_attribute("data-state") == "empty", panel
        assert element.find_element(By.CSS_SELECTOR, ".status").text == (
            "No views match these filters."
        )
    browser.get(f"{live_server.url}/?range=custom&start=2025-02-01&end=2025-01-01")
    _wait_ready(browser)
    element = browser.find_element(By.ID, "panel-top-blogs")
    assert element.get_attribute("data-state") == "error"
    assert element.find_element(By.CSS_SELECTOR, ".status").text.startswith("Could not load: ")
    assert element.find_element(By.CSS_SELECTOR, ".status").text == (
        "Could not load: start_date: 2025-02-01 is after end_date 2025-01-01."
    )


def test_the_admin_job_page_moves_its_bar_until_the_job_ends(
    browser: WebDriver, live_server: Any, staff: Any, password: str
) -> None:
    job = RebuildJob.objects.create(
        start_date=date(2024, 1, 1), end_date=date(2024, 1, 31), state="running", progress=0.25
    )
    staff.is_superuser = True
    staff.save()
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys("editor")
    browser.find_element(By.ID, "id_password").send_keys(password + Keys.ENTER)
    # The login's answer sets the session cookie: going on before it lands, as this test once
    # did, opens the job page signed out (the login form again, no bar).
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: urlsplit(d.current_url).path == "/admin/")
    browser.get(f"{live_server.url}/admin/rollups/rebuildjob/{job.pk}/change/")

    def bar(d: WebDriver) -> str | None:
        return d.find_element(By.CSS_SELECTOR, "progress.rebuild-progress").get_attribute("value")

    assert bar(browser) == "25"
    RebuildJob.objects.filter(pk=job.pk).update(progress=0.6)
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: bar(d) == "60")
    RebuildJob.objects.filter(pk=job.pk).update(state="done", progress=1.0)
    # Once ended, the page reloads and shows the outcome.
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: "Done" in d.find_element(By.CSS_SELECTOR, ".field-state").text
    )
    assert bar(browser) == "100"


@pytest.mark.parametrize("path", ["/redoc/", "/swagger/"])
def test_the_api_documentation_asks_nothing_of_another_host(
    browser: WebDriver, live_server: Any, path: str
) -> None:
    """Redoc's bundle always shows Redocly's logo from their CDN; the page's own script turns
    that address into an inline image (machines without the internet logged an error)."""
    browser.get(f"{live_server.url}{path}")
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda d: d.execute_script(
            "return document.querySelector('.opblock-tag, [role=menu] li, .operation-type')"
            " !== null"
        )
    )
    requested = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
        ".concat(Array.from(document.images, (i) => i.src));"
    )
    assert requested
    elsewhere = [
        url for url in requested if not url.startswith((live_server.url, "data:", "blob:"))
    ]
    assert elsewhere == []
    assert _console_errors(browser) == []
