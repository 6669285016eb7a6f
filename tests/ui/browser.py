"""Headless Chromium on the Prefect UI, as a person uses it: log in with the API's auth string,
open a page, find fields by their labels and options by their text, submit.  Debian's
``chromium`` and ``chromium-driver`` (`make install` installs both) and Selenium (the test
extra).  Every wait is an explicit WebDriverWait on what the page shows; a failure leaves a
screenshot and the page's text in the test's directory and says where."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
#: Long enough for the first page of a server that copies its UI files at its first request.
WAIT = 60


def require() -> tuple[str, str]:
    """Chromium's and its driver's paths; missing, the test is skipped, but fails in CI (``CI``
    set), where `make install` installs both: a skip there would hide that no browser ran."""
    import pytest

    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which(DRIVER)
    if browser is None or driver is None:
        why = "Chromium or its driver is missing (Debian: chromium, chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{why} in CI: `make install` installs both")
        pytest.skip(why)
    return browser, driver


class Page:
    """One headless Chromium on one Prefect server's UI."""

    def __init__(self, base: str, where: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = require()
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for argument in (
            "--headless=new",
            "--no-sandbox",  # the suite's account runs without user namespaces
            "--disable-dev-shm-usage",
            "--window-size=1400,2400",
            f"--user-data-dir={where / 'chromium-profile'}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
        self.base, self.where = base.rstrip("/"), where
        self.driver = webdriver.Chrome(options=options, service=Service(driver))

    def close(self) -> None:
        self.driver.quit()

    def wait(self, condition: Any, what: str, timeout: float = WAIT) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout).until(condition)
        except TimeoutException:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; {self.showing()}"
            ) from None

    def showing(self) -> str:
        """Where the browser is and what the page says (the start of its text, its alerts and
        the browser's console errors): a failure in CI can be read from the test's output."""
        from selenium.webdriver.common.by import By

        try:
            alerts = [
                e.text.strip()
                for e in self.driver.find_elements(
                    By.XPATH, "//*[@role='alert' or @role='status' or @data-sonner-toast]"
                )
                if e.text.strip()
            ]
            text = " ".join(self.driver.find_element(By.TAG_NAME, "body").text.split())
            console = [
                entry["message"]
                for entry in self.driver.get_log("browser")
                if entry.get("level") == "SEVERE"
            ]
        except Exception as exc:  # the browser itself may be what failed
            return f"the page could not be read: {exc!r}"
        return (
            f"at {self.driver.current_url}; alerts: {alerts}; console errors: {console[-5:]}; "
            f"page text: {text[:1500]}"
        )

    def open(self, path: str, credentials: str, ready: str) -> None:
        """Open PATH, logging in on the way when the UI asks (the auth string, never logged),
        until the field labelled READY shows."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.driver.get(self.base + path)
        login = (By.CSS_SELECTOR, "input[placeholder='admin:pass']")
        shown = (By.XPATH, _label(ready))
        found = self.wait(
            ec.any_of(ec.presence_of_element_located(login), ec.presence_of_element_located(shown)),
            f"the login or {path}",
        )
        if found.tag_name == "input":  # the login form, which sends the browser on to PATH
            found.send_keys(credentials)
            self.button("Login").click()
            self.wait(ec.presence_of_element_located(shown), f"{path} after logging in")

    def field(self, label: str) -> Any:
        """The input that the label reading LABEL is for."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        found = self.wait(
            ec.presence_of_element_located((By.XPATH, _label(label))),
            f"the field labelled {label!r}",
        )
        return self.driver.find_element(By.ID, found.get_attribute("for"))

    def type(self, label: str, text: str) -> None:
        field = self.field(label)
        field.send_keys(text)
        self.wait(lambda _: field.get_attribute("value") == text, f"{label!r} to hold {text!r}")

    def choose(self, label: str, option: str) -> None:
        """Open the dropdown labelled LABEL and pick OPTION; wait until it shows it."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        dropdown = self.field(label)
        dropdown.click()
        self.wait(
            ec.element_to_be_clickable(
                (By.XPATH, f"//*[@role='option'][normalize-space()={option!r}]")
            ),
            f"option {option!r} of {label!r}",
        ).click()
        self.wait(lambda _: dropdown.text.strip() == option, f"{label!r} showing {option!r}")
        # the list closes with an animation, during which the page ignores the pointer: a click
        # on Submit then only dismisses the list, and no run is made
        self.wait(
            lambda driver: (
                not driver.find_elements(By.XPATH, "//*[@role='listbox']")
                and driver.execute_script("return getComputedStyle(document.body).pointerEvents")
                != "none"
            ),
            f"the options of {label!r} to close",
        )

    def button(self, text: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait(
            ec.element_to_be_clickable((By.XPATH, f"//button[normalize-space()={text!r}]")),
            f"the button {text!r}",
        )

    @contextlib.contextmanager
    def shown_on_failure(self, name: str) -> Iterator[None]:
        """A failure inside keeps a screenshot and the page's text (named NAME) and says where."""
        try:
            yield
        except Exception as exc:
            shot = self.where / f"{name}.png"
            text = self.where / f"{name}.txt"
            with contextlib.suppress(Exception):  # the browser may be what failed
                self.driver.save_screenshot(str(shot))
                text.write_text(f"{self.driver.current_url}\n\n{self.driver.page_source}")
            raise AssertionError(f"{exc}\n(screenshot: {shot}; page: {text})") from exc


@contextlib.contextmanager
def page(base: str, where: Path) -> Iterator[Page]:
    opened = Page(base, where)
    try:
        yield opened
    finally:
        opened.close()


def _label(text: str) -> str:
    return f"//label[normalize-space()={text!r}]"
