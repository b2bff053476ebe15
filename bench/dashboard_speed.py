"""The dashboard in a real browser: time until every panel is filled, on load and per filter.

    python bench/dashboard_speed.py [--database-url URL] [--redis-url URL] [--runs 5]

Runs against an existing database (default: the one bench/rollup_speed.py fills with ~10 M
views) with gunicorn (gunicorn.conf.py's defaults) on PostgreSQL and Redis, signed in as a staff
user (every panel, rollup health included). Headless Chromium (Debian's, through its
chromedriver) reads the page's own performance measures: ``dash:load`` (navigation start to
every panel filled) and ``dash:filter`` (a filter changed to every panel filled again).

Each run starts gunicorn with a cache key prefix of its own, so the cache is cold: the load
and every filter change compute their answers (the second load of a run, all answers cached,
is shown too). The processes are warmed first with a few pages of other filters (templates
compiled, database connections open), as a server that has been up a while is. Needs chromium
and chromium-driver; without them it says so and stops.
"""

import argparse
import os
import shutil
import statistics
import time
import uuid
from typing import Any

from common import ROLLUPS_DATABASE_URL, bench_env, django_setup, gunicorn_serving, manage

PORT = 8767
REDIS_URL = "redis://127.0.0.1:6379/11"
USERNAME = "bench-dashboard"
PASSWORD = "bench-dashboard-password"
WAIT_SECONDS = 60
WARM_UP_PAGES = 3

# (what is changed, how): each step changes one filter of the view the previous step left.
FILTER_STEPS: list[tuple[str, str, str]] = [
    ("range: last 90 days", "select", "f-range=90d"),
    ("granularity: week", "select", "f-period=week"),
    ("only countries: DE", "type", "f-country=DE"),
    ("exclude countries: US", "type", "f-exclude=US"),
    ("range: this year", "select", "f-range=year"),
    ("range: all time", "select", "f-range=all"),
]


def _staff_user() -> None:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    user.is_staff = True
    user.set_password(PASSWORD)
    user.save()


def _views() -> int:
    from ingest.models import BlogView

    return BlogView.objects.count()


def _browser(chromium: str, chromedriver: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def _measure(driver: Any, name: str) -> float:
    """The latest performance measure ``name`` of the page, in ms."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.execute_script(
            "return document.getElementById('dashboard').dataset.state === 'ready'"
        )
    )
    entries = driver.execute_script(
        "return performance.getEntriesByName(arguments[0]).map(e => e.duration)", name
    )
    return float(entries[-1])


def _generation(driver: Any) -> int:
    return int(
        driver.execute_script(
            "return Number(document.getElementById('dashboard').dataset.generation || 0)"
        )
    )


def _step(driver: Any, how: str, target: str) -> float:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    control, value = target.split("=", 1)
    before = _generation(driver)
    element = driver.find_element(By.ID, control)
    if how == "select":
        Select(element).select_by_value(value)
    else:
        element.send_keys(value + Keys.ENTER)
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: _generation(d) > before)
    return _measure(driver, "dash:filter")


def _sign_in(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/login/")
    driver.find_element(By.ID, "id_username").send_keys(USERNAME)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD + Keys.ENTER)
    WebDriverWait(driver, WAIT_SECONDS).until(lambda d: d.get_cookie("sessionid") is not None)


def _summary(values: list[float]) -> str:
    return f"p50 {statistics.median(values):6.0f} ms, max {max(values):6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=ROLLUPS_DATABASE_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    chromium = os.environ.get("CHROMIUM_BINARY") or shutil.which("chromium")
    chromedriver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not (chromium and chromedriver):
        print("dashboard: skipped, no Chromium (apt-get install chromium chromium-driver)")
        return

    env = bench_env(args.database_url, redis_url=args.redis_url)
    env.update({"ANALYTICS_THROTTLE_USER": "1000000/min", "ANALYTICS_PUBLIC_READ": "0"})
    # The page's assets as production serves them: collected, compressed, by whitenoise.
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    django_setup(env)
    _staff_user()
    views = _views()
    base = f"http://127.0.0.1:{PORT}"
    pages = {"/ (last 30 days)": "/", "/?range=all (all time)": "/?range=all"}
    loads: dict[str, list[float]] = {name: [] for name in pages}
    warm: list[float] = []
    steps: dict[str, list[float]] = {name: [] for name, _, _ in FILTER_STEPS}

    driver = _browser(chromium, chromedriver)
    try:
        for _ in range(args.runs):
            # A fresh key prefix: nothing this run asks has been cached.
            run_env = {**env, "CACHE_KEY_PREFIX": f"bench-dashboard-{uuid.uuid4().hex}"}
            with gunicorn_serving(run_env, PORT):
                driver.delete_all_cookies()
                _sign_in(driver, base)
                # Warm processes (templates, connections) on views of their own, so that
                # what is measured below finds no answer cached.
                for n in range(WARM_UP_PAGES):
                    driver.get(f"{base}/?range=custom&start=1901-01-01&end=1901-01-0{n + 1}")
                    _measure(driver, "dash:load")
                for name, path in pages.items():
                    driver.get(base + path)
                    loads[name].append(_measure(driver, "dash:load"))
                driver.get(base + "/")
                warm.append(_measure(driver, "dash:load"))
                for name, how, target in FILTER_STEPS:
                    steps[name].append(_step(driver, how, target))
            time.sleep(0.5)
    finally:
        driver.quit()

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"dashboard in headless Chromium at {args.database_url.rsplit('/', 1)[1]} "
        f"({views:,} views), staff, gunicorn defaults, Redis; cache cold, {args.runs} runs "
        f"(browser and server on this machine, load average now {load}):"
    )
    for name, values in loads.items():
        print(f"  load, every panel filled  {name:<28} {_summary(values)}")
    print(f"  load, every answer cached {'/ (last 30 days)':<28} {_summary(warm)}")
    for name, values in steps.items():
        print(f"  filter change, every panel again: {name:<24} {_summary(values)}")


if __name__ == "__main__":
    main()
