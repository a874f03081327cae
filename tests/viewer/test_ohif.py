"""Seen in a viewer: OHIF (the built 3.13 app) lists triphase's SR and draws its region on the right image.

Radiologists read in OHIF, which parses TID 1500 measurement groups and draws their regions over
the referenced images. The test serves OHIF's ``dist`` and Orthanc's DICOMweb from one origin, opens
the analysed study in headless Chromium, and checks, through OHIF's own state, that the study
browser lists the SR series, that loading it places the lesion's region (its tracking identifier,
its probabilities as label rows) on the very image the SR references, and that the viewport shows
that image. ``TRIPHASE_SCREENSHOT_DIR=docs`` also writes the screenshot kept as docs/ohif-sr.png.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import require_tool
from tests.viewer.browser import chromium_driver, viewer_state, wait_for
from tests.viewer.conftest import AnalysedStudy

pytestmark = [pytest.mark.slow, pytest.mark.interop, pytest.mark.timeout(90)]

SR_THUMBNAIL = ("//*[@data-cy='series-modality-label' and normalize-space()='SR']"
                "/following-sibling::*//*[@data-cy='series-description-label' and normalize-space()=$desc]")


def sr_thumbnail(driver: webdriver.Chrome, description: str) -> WebElement | None:
    """The study browser's entry for the SR series (modality SR, our series description)."""
    found = driver.find_elements(By.XPATH, SR_THUMBNAIL.replace("$desc", repr(description)))
    return found[0] if found else None


def drawn_measurement(driver: webdriver.Chrome) -> dict[str, Any] | None:
    """OHIF's state once the SR's first measurement has been placed on an image, else None."""
    state = viewer_state(driver)
    if not state or not state["sr"] or not state["sr"][0]["measurements"]:
        return None
    measurement = state["sr"][0]["measurements"][0]
    return state | {"measurement": measurement} if measurement["loaded"] else None


def dismiss_tracking_prompt(driver: webdriver.Chrome) -> None:
    """OHIF asks whether to track the SR's measurements; 'No' keeps the SR read-only, as shown."""
    buttons = driver.find_elements(By.XPATH, "//button[normalize-space()='No']")
    if buttons:
        buttons[0].click()
        wait_for(driver, lambda d: not d.find_elements(By.XPATH, "//button[normalize-space()='No']"), 10,
                 "the tracking prompt going away")


def test_ohif_lists_the_sr_and_draws_its_region_on_the_referenced_image(
        ohif_site: str, analysed_study: AnalysedStudy, tmp_path: Path) -> None:
    chromium, chromedriver = require_tool("chromium"), require_tool("chromedriver")
    study = analysed_study
    with chromium_driver(chromium, chromedriver, tmp_path / "profile") as driver:
        driver.get(f"{ohif_site}/viewer?StudyInstanceUIDs={study.study_uid}")
        thumbnail = wait_for(driver, lambda d: sr_thumbnail(d, str(study.sr.SeriesDescription)), 60,
                             "the SR series in the study browser")
        try:
            ActionChains(driver).double_click(thumbnail).perform()
        except WebDriverException:  # the study browser re-rendered under the pointer; once more, fresh
            ActionChains(driver).double_click(sr_thumbnail(driver, str(study.sr.SeriesDescription))).perform()
        state = wait_for(driver, drawn_measurement, 30, "the SR's region placed on an image")

        measurement = state["measurement"]
        assert measurement["tracking"] == study.lesion_id
        assert measurement["image"] == study.region_image_uid  # the image the SR references, found
        assert measurement["graphic"] == "POLYLINE"
        shown = {row["label"]: float(row["value"].split()[0]) for row in measurement["labels"]
                 if row["label"].startswith("Probability of ")}
        expected = {f"Probability of {k.replace('_', ' ')}": v for k, v in study.probabilities.items()}
        assert shown.keys() == expected.keys()
        # OHIF shows each value with two decimals, so it can differ from ours by up to 0.01.
        assert all(abs(shown[k] - expected[k]) < 0.01 for k in expected), (shown, expected)

        viewport = wait_for(driver, lambda d: next(
            (v for v in (viewer_state(d) or {}).get("viewports", [])
             if v["imageId"] and f"/instances/{study.region_image_uid}/" in v["imageId"]), None), 20,
            "a viewport showing the referenced image")
        drawn = [a for a in state["annotations"] if a["tool"] == "DICOMSRDisplay"]
        assert [a["imageId"] for a in drawn] == [viewport["imageId"]]  # drawn there, and only there
        dismiss_tracking_prompt(driver)
        # the label rows are on screen (SVG text over the viewport), not only in OHIF's state
        wait_for(driver, lambda d: "Probability of" in d.find_element(By.TAG_NAME, "body").text, 15,
                 "the label rows drawn over the image")
        shot = tmp_path / "ohif-sr.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    if target := os.environ.get("TRIPHASE_SCREENSHOT_DIR"):
        shutil.copyfile(shot, Path(target) / "ohif-sr.png")
