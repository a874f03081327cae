"""pydicom's Enhanced CT and MR sample files (the pydicom-data package) through the frame reader.

These come from other software than ours: a real Enhanced CT with full functional groups
(eCT_Supplemental.dcm) and an Enhanced MR whose functional groups were stripped by the tool that
made it small (emri_small*.dcm, in five transfer syntaxes). The reader must list every frame,
read the facts each file holds and invent none it lacks, and decode each frame alike whatever the
transfer syntax, from the whole data set or from the file one frame at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import missing
from worker.grouping.frames import frame_pixels, read_frames
from worker.grouping.series_info import scan_studies
from worker.volumes import VolumeError, load_volume

EMRI = ("emri_small.dcm", "emri_small_big_endian.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm")


def sample(name: str) -> Path:
    """A file of the pydicom-data package; never downloaded (the machine is offline, and it would hang)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        missing(f"{name} is in the pydicom-data package (a test dependency), which is not installed")
    return Path(path)


@pytest.mark.parametrize("name", EMRI)
def test_enhanced_mr_sample_frames_and_facts(name: str) -> None:
    path = sample(name)
    scan = scan_studies([path])
    assert scan.unreadable == []
    [[series]] = scan.series.values()
    assert (series.modality, series.sop_class_uid) == ("MR", "1.2.840.10008.5.1.4.1.1.4.1")
    assert [i.frame_number for i in series.images] == list(range(1, 11))
    assert {i.sop_instance_uid for i in series.images} == {str(pydicom.dcmread(path, stop_before_pixels=True)
                                                              .SOPInstanceUID)}
    # What the file says: a 3-D T1 gradient echo (Enhanced MR's EchoPulseSequence) at 3 T, acquisition 3.
    assert series.scanning_sequence == ("GR",) and series.field_strength == 3.0
    assert series.mr_acquisition_type == "3D" and series.sequence_name == "T1TFE"
    assert {i.acquisition_number for i in series.images} == {3}
    assert [i.acquisition_seconds for i in series.images] == pytest.approx([12 * 3600 + 8 * 60 + 4.06] * 10)
    assert {i.image_type for i in series.images} == {("ORIGINAL", "PRIMARY", "T1", "NONE")}
    # What it lacks stays unknown: no plane geometry, no echo time, no b-value in this stripped file.
    assert all(i.position is None and i.orientation is None and i.pixel_spacing is None for i in series.images)
    assert series.echo_time is None and series.b_values == set()
    with pytest.raises(VolumeError, match="fewer than two images with geometry"):
        load_volume(series)


def test_enhanced_mr_frames_decode_alike_in_every_transfer_syntax() -> None:
    reference = pydicom.dcmread(sample(EMRI[0])).pixel_array.astype(np.float32)
    assert reference.shape == (10, 64, 64) and reference.std() > 0
    for name in EMRI:
        path = sample(name)
        whole = pydicom.dcmread(path)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for frame in (1, 5, 10):
            assert np.array_equal(frame_pixels(whole, frame), reference[frame - 1]), (name, frame)
            assert np.array_equal(frame_pixels(header, frame, source=path), reference[frame - 1]), (name, frame)


def test_enhanced_ct_sample_geometry_per_frame() -> None:
    path = sample("eCT_Supplemental.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    first, second = read_frames(header)
    assert (first.frame_number, second.frame_number) == (1, 2)
    assert first.position == (99.5, -301.5, -159.0) and second.position == (99.5, -301.5, -149.0)
    for facts in (first, second):
        assert facts.orientation == (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        assert facts.pixel_spacing == (0.388672, 0.388672) and facts.slice_thickness == 10.0
        assert facts.rescale == (1.0, -1024.0) and facts.window == (49.0, 102.0)
        assert facts.contrast is True and facts.stack_id == "1" and facts.acquisition_number == 1
        assert facts.frame_type == ("DERIVED", "PRIMARY", "PERFUSION", "RCBF")
    assert (first.in_stack_position, second.in_stack_position) == (2, 1)
    assert (first.dimension_values, second.dimension_values) == ((1, 2), (1, 1))

    [[series]] = scan_studies([path]).series.values()
    assert series.dimension_names == ("StackID", "InStackPositionNumber")
    assert series.contrast_agent == "Iohexol" and series.slice_thickness == 10.0
    stored = pydicom.dcmread(path).pixel_array.astype(np.float32)
    volume = load_volume(series)
    assert volume.shape == (2, 512, 512)
    by_position = {tuple(volume.to_patient(np.array([[k, 0.0, 0.0]]))[0].round(3)): volume.voxels[k] for k in (0, 1)}
    assert np.array_equal(by_position[(99.5, -301.5, -159.0)], stored[0] - 1024)  # frame 1, rescaled to HU
    assert np.array_equal(by_position[(99.5, -301.5, -149.0)], stored[1] - 1024)
    assert np.isclose(abs(volume.affine[2, 0]), 10.0)  # slices 10 mm apart along z
    assert np.array_equal(frame_pixels(header, 2, source=path), stored[1] - 1024)
