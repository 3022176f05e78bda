"""The browser of the driver page's tests: Debian's headless Chromium driven by Selenium, one
per test session. Selenium's calls block, and the API under test is served in the test's own
event loop, so tests call the browser through `Page`, which runs each step in a thread."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import OUTPUT

CHROMIUM = Path(os.environ.get("FLOWBILL_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FLOWBILL_CHROMEDRIVER", "/usr/bin/chromedriver"))
SHOTS = OUTPUT / "web"
WAIT_SECONDS = 20
T = TypeVar("T")


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium (scripts/setup.sh installs it from Debian's packages)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make setup` (scripts/setup.sh)")
    # Never let Selenium Manager look for browsers or drivers on the network.
    os.environ.setdefault("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1600",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser at the API's pages; every Selenium call runs in a worker thread."""

    def __init__(self, driver: webdriver.Chrome, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    async def call(self, step: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(step, *args)

    async def open(self, path: str) -> None:
        await self.call(self._open, path)

    def _open(self, path: str) -> None:
        self.driver.get(self.base_url + path)
        self._loaded()

    def _loaded(self) -> None:
        WebDriverWait(self.driver, WAIT_SECONDS).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )

    async def fresh(self) -> None:
        """A browser with no cookies of the site (signed out, language from the browser)."""

        def clear() -> None:
            self.driver.get(self.base_url + "/healthz")
            self.driver.delete_all_cookies()

        await self.call(clear)

    async def submit(self, button: str, fields: dict[str, str] | None = None) -> None:
        """Fill inputs (by id; a select by its option's value), click, wait for the next page."""
        await self.call(self._submit, button, fields or {})

    def _submit(self, button: str, fields: dict[str, str]) -> None:
        for field_id, value in fields.items():
            element = self.driver.find_element(By.ID, field_id)
            if element.tag_name == "select":
                element.find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()
            else:
                element.clear()
                element.send_keys(value)
        self._navigate(lambda: self.driver.find_element(By.ID, button).click())

    async def sign_in_with_link(self, link: str) -> None:
        """Open a one-time sign-in link and press its "Sign in" button."""
        await self.open(link.removeprefix(self.base_url))
        await self.submit("sign-in")

    async def click_link(self, link_id: str) -> None:
        await self.call(self._navigate, lambda: self.driver.find_element(By.ID, link_id).click())

    def _navigate(self, action: Callable[[], None]) -> None:
        # The page being left is marked; the next one, loaded, is not. (Waiting for the old
        # <html> element to go stale races with Chromium tearing the document down: it may
        # answer "node does not belong to the document" instead of "stale".)
        self.driver.execute_script("document.documentElement.dataset.leaving = 'yes'")
        action()
        WebDriverWait(self.driver, WAIT_SECONDS, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script(
                "return document.readyState === 'complete'"
                " && document.documentElement.dataset.leaving === undefined"
            )
        )

    async def find(self, css: str) -> WebElement:
        return await self.call(
            lambda: WebDriverWait(self.driver, WAIT_SECONDS).until(
                ec.presence_of_element_located((By.CSS_SELECTOR, css))
            )
        )

    async def all(self, css: str) -> list[WebElement]:
        return await self.call(self.driver.find_elements, By.CSS_SELECTOR, css)

    async def attribute(self, css: str, name: str) -> str:
        element = await self.find(css)
        value = await self.call(element.get_attribute, name)
        assert value is not None, f"{css} has no {name}"
        return value

    async def text(self, css: str) -> str:
        element = await self.find(css)
        return await self.call(lambda: element.text)

    async def charts_drawn(self) -> int:
        """Wait until the chart script drew every canvas; returns how many."""

        def drawn() -> int:
            WebDriverWait(self.driver, WAIT_SECONDS).until(
                lambda d: d.execute_script(
                    "const c = document.querySelectorAll('canvas.chart');"
                    "return c.length > 0 && [...c].every(x => x.dataset.drawn === 'true');"
                )
            )
            return len(self.driver.find_elements(By.CSS_SELECTOR, "canvas.chart"))

        return await self.call(drawn)

    async def screenshot(self, name: str) -> Path:
        """The whole page as test-output/web/<name>.png."""
        path = SHOTS / f"{name}.png"

        def shoot() -> None:
            height = self.driver.execute_script("return document.body.scrollHeight")
            self.driver.set_window_size(1280, max(800, min(int(height) + 100, 8000)))
            self.driver.save_screenshot(str(path))
            self.driver.set_window_size(1280, 1600)

        await self.call(shoot)
        assert path.stat().st_size > 0
        return path


@pytest.fixture
async def page(browser: webdriver.Chrome, api_url: str) -> Page:
    opened = Page(browser, api_url)
    await opened.fresh()
    return opened


def api_key(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def sign_in_link(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    made = await http.post("/v1/me/sign-in-links", headers=headers)
    assert made.status_code == 201, made.text
    url: str = made.json()["url"]
    return url


async def follow_link(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """What a browser does with a one-time link: open its page (which consumes nothing), then
    post its form; returns the answer to the post."""
    shown = await client.get(url.removeprefix(str(client.base_url).rstrip("/")))
    assert shown.status_code == 200, shown.text
    return await client.post(
        "/sign-in/link",
        data={"csrf": hidden(shown.text, "csrf"), "token": hidden(shown.text, "token")},
    )


def assert_page_problem(response: httpx.Response, status: int, type_suffix: str) -> None:
    """A page refused with the API's problem (status and type), shown as HTML."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    found = re.search(r'id="problem"[^>]* data-type="([^"]*)"', response.text)
    assert found is not None, "the page shows no problem"
    assert found[1].endswith(f"/{type_suffix}"), found[1]


def hidden(html: str, name: str, form_id: str | None = None) -> str:
    """A hidden field's value in a rendered page (within one form when named)."""
    if form_id is not None:
        html = html[html.index(f'id="{form_id}"') :]
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no hidden field {name}"
    return found[1]
