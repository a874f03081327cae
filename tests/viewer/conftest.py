"""A study triphase analysed, in Orthanc with DICOMweb, behind OHIF's built viewer.

The study is synthetic (what ``triphase synth`` writes) and analysed the way ``triphase analyze``
does it, in process, with a tiny network trained on synthetic composites: the classes are
meaningless, the SR's structure is the real one. OHIF's ``dist`` comes from
``tests/viewer/fetch_ohif.sh`` (tests/run.sh runs it); it is never part of the repository.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from models.architectures import default_registry
from models.artifact import save_trained
from models.inference import Classifier
from models.training import TrainingConfig, train_model
from tests.conftest import free_port, require_file
from tests.models.synthetic import make_composites
from tests.processes import Orthanc
from tests.viewer.site import serve
from worker.analysis import analyse_study
from worker.grouping import load_rules
from worker.grouping.series_info import scan_studies
from worker.results.algorithm import algorithm_for
from worker.results.identity import device_uid
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

OHIF_VERSION = "3.13.2"
CT_CLASSES = ["early_hcc", "well_hcc", "moderate_hcc", "poor_hcc", "non_hcc_cc"]
MEASUREMENT_GROUP = "125007"


@dataclass(frozen=True)
class AnalysedStudy:
    study_uid: str
    files: list[Path]  # the source images, the SR and the Secondary Captures
    sr: Dataset
    lesion_id: str
    probabilities: dict[str, float]
    region_image_uid: str  # the SOP instance the SR's region is drawn on


@pytest.fixture
def ohif_dist() -> Path:
    default = Path.home() / ".cache" / "triphase" / "ohif" / OHIF_VERSION / "dist"
    dist = Path(os.environ.get("TRIPHASE_OHIF_DIST", default))
    require_file(dist / "index.html", f"OHIF {OHIF_VERSION} (tests/viewer/fetch_ohif.sh fetches it)")
    return dist


def region_image_uid(sr: Dataset) -> str:
    """The image the first measurement group's region is SELECTED FROM, read from the SR itself."""
    def items(parent: Dataset) -> Iterator[Dataset]:
        for item in parent.get("ContentSequence", []):
            yield item
            yield from items(item)

    group = next(i for i in items(sr) if i.ValueType == "CONTAINER"
                 and i.ConceptNameCodeSequence[0].CodeValue == MEASUREMENT_GROUP)
    region = next(i for i in group.ContentSequence if i.ValueType == "SCOORD")
    return str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


@pytest.fixture
def analysed_study(tmp_path: Path) -> AnalysedStudy:
    studies = tmp_path / "studies"
    generate_run(studies, StudyOptions(task="ct-histology", seed=3, difficulty=0.2, slices=8, matrix=64,
                                       extras=False, single_series=False, style="ge"), 1, [])
    composites = make_composites(classes=CT_CLASSES, patients_per_class=3, size=32, seed=1)
    config = TrainingConfig(architecture="tinycnn", mode="finetune", folds=2, epochs=1, batch_size=16,
                            input_size=32, random_init=True, patience=1, seed=0, device="cpu")
    model = train_model(composites.images, composites.labels, composites.patient_ids, classes=CT_CLASSES,
                        config=config, registry=default_registry(), weights_dir=tmp_path)
    artifact = save_trained(model, tmp_path / "models", task="ct-histology",
                            channel_recipe=["arterial", "delayed", "pre"], windowing={"source": "test"})
    classifier = Classifier(artifact, registry=default_registry(), device="cpu")
    [(uid, series)] = scan_studies([studies / "study-0001"]).series.items()
    result = analyse_study(uid, series, load_rules(), classifier=classifier, algorithm=algorithm_for(artifact),
                           device_uid=device_uid(tmp_path))
    assert result.outcome == "analysed" and result.sr is not None, result.reason
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    result.sr.save_as(outputs / "SR.dcm", enforce_file_format=True)
    for sc, lesion in zip(result.scs, result.lesions, strict=True):
        sc.save_as(outputs / f"SC_{lesion.lesion_id}.dcm", enforce_file_format=True)
    sr = pydicom.dcmread(outputs / "SR.dcm")
    lesion = result.lesions[0]
    return AnalysedStudy(study_uid=uid, files=sorted((studies / "study-0001").glob("*.dcm")) + sorted(
        outputs.glob("*.dcm")), sr=sr, lesion_id=lesion.lesion_id, probabilities=dict(lesion.probabilities),
        region_image_uid=region_image_uid(sr))


@pytest.fixture
def ohif_site(ohif_dist: Path, orthanc_factory: Callable[..., Orthanc],
              analysed_study: AnalysedStudy) -> Iterator[str]:
    """OHIF's base URL, with the analysed study stored in Orthanc (DICOMweb) behind it."""
    orthanc = orthanc_factory(dicomweb=True)
    orthanc.upload(analysed_study.files)
    with serve(ohif_dist, f"http://127.0.0.1:{orthanc.http_port}", free_port()) as base:
        yield base
