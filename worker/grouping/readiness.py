"""Is a study whole yet? The grouping rules, run on what the node has received so far.

The node completes a study early only when this check is sure: the rules find every required
role of the study's task without ambiguity, and nothing in the headers says a series that fills a
role is still short of images. It runs the very rules the analysis runs, so it knows what the
analysis will need, with no second description of the roles to keep in step. It is injected into
the node by the process that builds it (the node never imports the worker).

What "short of images" means uses only what scanners write: instance numbers with a hole in the
middle (an instance not yet received; senders such as Orthanc do not send in order), or fewer
images than Images in Acquisition (0020,1002) announces where a scanner writes it. A sender that
pauses after the first half of a series sent in order leaves no such trace: the settle period
covers that, and the quiet period anything the check cannot tell.

A multi-frame instance (Enhanced, Legacy Converted) arrives whole in one C-STORE, so its frames are
never short: one instance holding a whole series, or several phases of it, counts as whole. Only
the instance numbers of several multi-frame instances in one series can show a hole, and Images
in Acquisition, which counts classic images, says nothing about frames.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from db.runtime import Runtime
from node.completion import RoleCheck, RoleReport
from worker.grouping.matching import Outcome, group_study
from worker.grouping.rules import Rules, load_rules
from worker.grouping.series_info import ImageInfo, SeriesInfo, scan_studies
from worker.settings import GroupingSettings


def _holes(images: Sequence[ImageInfo]) -> str | None:
    """Why one acquisition's images look incomplete by their instance numbers, or None."""
    numbers = [i.instance_number for i in images]
    known = sorted(n for n in numbers if n is not None)
    if len(known) != len(numbers) or len(set(known)) != len(known) or not known:
        return None  # absent or repeated numbers: they cannot tell
    expected = known[-1] - known[0] + 1
    return None if expected == len(known) else f"{expected - len(known)} instance number(s) missing " \
        f"between {known[0]} and {known[-1]}"


def _announced(images: Sequence[ImageInfo]) -> str | None:
    """Why one acquisition looks incomplete by Images in Acquisition, or None."""
    announced = {i.images_in_acquisition for i in images}
    if len(announced) != 1:
        return None
    count = announced.pop()
    return None if count is None or len(images) >= count else f"{len(images)} of {count} announced images"


def series_short_of_images(series: SeriesInfo) -> list[str]:
    """What says that a series (every acquisition in it) has not been received whole."""
    acquisitions: dict[int | None, list[ImageInfo]] = defaultdict(list)
    for image in series.images:
        acquisitions[image.acquisition_number].append(image)
    if len(acquisitions) > 1 and None in acquisitions:
        acquisitions = {None: list(series.images)}  # some images without a number: one group
    problems = []
    for images in acquisitions.values():
        instances = list({image.sop_instance_uid: image for image in images}.values())  # frames of one: one
        classic = all(image.frame_number is None for image in images)
        for finding in (_holes(instances), _announced(images) if classic else None):
            if finding:
                label = f"series {series.series_number}" if series.series_number is not None else "a series"
                problems.append(f"{label} ({series.description or 'no description'}): {finding}")
    return problems


class GroupingRoleCheck:
    """A :class:`node.completion.RoleCheck` that runs the grouping rules on the received files."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    def __call__(self, study_uid: str, files: Sequence[Path]) -> RoleReport:
        scan = scan_studies(files)
        series = scan.series.get(study_uid, [])
        grouping = group_study(study_uid, series, self.rules)
        if grouping.task is None:
            return RoleReport(None)
        task = self.rules.task[grouping.task]
        found = tuple(role for role, match in grouping.roles.items() if match is not None)
        missing = tuple(role for role in task.required if grouping.roles.get(role) is None)
        unsure: list[str] = []
        if scan.unreadable:
            unsure.append(f"{len(scan.unreadable)} file(s) could not be read")
        if grouping.outcome is Outcome.AMBIGUOUS:
            unsure.extend(grouping.problems)
        originals = {s.series_uid: s for s in series}
        used = {match.series.series_uid for match in grouping.roles.values() if match is not None}
        for series_uid in sorted(used):
            unsure.extend(series_short_of_images(originals[series_uid]))
        return RoleReport(grouping.task, found, missing, tuple(unsure))


def role_check_for(runtime: Runtime) -> RoleCheck:
    """The role check of a configured process: the site's rules file, or the shipped rules."""
    return GroupingRoleCheck(load_rules(runtime.section(GroupingSettings).rules))
