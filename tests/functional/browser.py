"""Headless Chromium for the dashboard's tests, driven by Selenium through Debian's chromedriver.

`chromium(folder)` starts a browser with a fresh profile in `folder` and no network of its own
(no sync, no component updates, no background requests), and quits it, killing its driver by
pid if it does not quit in time. Where Chromium or its driver is missing, `skip_reason` says why
and the tests skip. Console messages come from the browser log (`console_errors`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--no-default-browser-check",
)
PAGE_LOAD_S = 30


def _first(paths: tuple[str, ...], name: str) -> str | None:
    found = [p for p in paths if os.access(p, os.X_OK)]
    return found[0] if found else shutil.which(name)


def binaries() -> tuple[str | None, str | None]:
    return _first(BROWSERS, "chromium"), _first(DRIVERS, "chromedriver")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    browser, driver = binaries()
    if browser is None or driver is None:
        return (
            "Chromium and chromedriver are needed (Debian: apt-get install chromium "
            "chromium-driver; `make install` does it when run as root)"
        )
    return None


@contextmanager
def chromium(profile: Path, width: int = 1280, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile in `profile`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = binaries()
    assert browser is not None and driver_path is not None, skip_reason()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(profile) + ".driver.log")
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(PAGE_LOAD_S)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            process = getattr(service, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors (and failed loads) since the last call."""
    return [
        f"{entry.get('source')}: {entry.get('message')}"
        for entry in driver.get_log("browser")
        if entry.get("level") == "SEVERE"
    ]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - the page may still be loading
            last = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}: {last}")
