"""Headless Chromium under Selenium, and what OHIF's own state says it shows.

OHIF keeps its services on ``window.services`` and Cornerstone on ``window.cornerstone`` /
``window.cornerstoneTools``; ``VIEWER_STATE`` reads from them what a radiologist sees: the SR
display sets with the measurements OHIF parsed out of the SR (tracking identifier, the image each
region was placed on, the label rows), each viewport's current image, and the annotations drawn.
Every wait is explicit and bounded; a timeout reports the browser's console.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.command import Command
from selenium.webdriver.support.ui import WebDriverWait

T = TypeVar("T")

VIEWER_STATE = """
const s = window.services, cs = window.cornerstone, tools = window.cornerstoneTools;
if (!s || !cs || !tools) return null;
const srSets = s.displaySetService.getActiveDisplaySets().filter(ds => ds.Modality === 'SR');
return {
  sr: srSets.map(ds => ({
    series: ds.SeriesInstanceUID, loaded: ds.isLoaded === true,
    measurements: (ds.measurements || []).map(m => ({
      loaded: m.loaded === true, tracking: m.TrackingIdentifier, image: m.ReferencedSOPInstanceUID || null,
      imageId: m.imageId || null, graphic: m.graphicType || null, labels: m.labels || []})),
  })),
  viewports: cs.getEnabledElements().map(e => ({
    id: e.viewportId, imageId: e.viewport.getCurrentImageId ? e.viewport.getCurrentImageId() || null : null})),
  annotations: tools.annotation.state.getAllAnnotations().map(a => ({
    tool: a.metadata.toolName, imageId: a.metadata.referencedImageId || null,
    labels: (a.data && a.data.labels) || []})),
};
"""


@contextmanager
def chromium_driver(chromium: str, chromedriver: str, profile: Path) -> Iterator[webdriver.Chrome]:
    """Debian's Chromium, headless, WebGL through SwiftShader (Cornerstone renders with WebGL)."""
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                     f"--user-data-dir={profile}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                     "--no-first-run", "--disable-background-networking"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def console_tail(driver: webdriver.Chrome, lines: int = 25) -> str:
    try:
        entries = driver.execute(Command.GET_LOG, {"type": "browser"})["value"]  # get_log, typed
    except WebDriverException:
        return "(no browser log)"
    return "\n".join(f"{e['level']} {e['message'][:300]}" for e in entries[-lines:])


def wait_for(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], T | None], timeout: float,
             what: str) -> T:
    """``condition``'s first truthy value within ``timeout`` seconds; else fail, with the console."""
    try:
        found = WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        raise AssertionError(f"OHIF: {what} not within {timeout:.0f} s\n{console_tail(driver)}") from None
    assert found is not None  # WebDriverWait returns only a truthy value
    return found


def viewer_state(driver: webdriver.Chrome) -> dict[str, Any] | None:
    state = driver.execute_script(VIEWER_STATE)
    return state if isinstance(state, dict) else None
