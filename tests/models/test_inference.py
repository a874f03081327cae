"""Inference is deterministic, abstains below its threshold, supports TTA, and explains itself."""

from __future__ import annotations

import numpy as np
import pytest

from models.architectures import default_registry
from models.inference import INDETERMINATE, Classifier
from models.transforms import Augmentation, Preprocessing, augment, misregister, to_input_tensor
from tests.models.conftest import CLASSES
from tests.models.synthetic import make_composites


@pytest.fixture(scope="module")
def classifier(tiny_artifact) -> Classifier:
    return Classifier(tiny_artifact, registry=default_registry(), device="cpu")


def test_predictions_are_deterministic(classifier: Classifier, held_out_set) -> None:
    first = classifier.predict(held_out_set.images[:8])
    assert [p.probabilities for p in first] == [p.probabilities for p in classifier.predict(held_out_set.images[:8])]
    rebatched = classifier.predict(held_out_set.images[:8], batch_size=3)
    for a, b in zip(first, rebatched, strict=True):
        assert a.label == b.label
        assert np.allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-6)


def test_abstention_yields_indeterminate(classifier: Classifier, held_out_set) -> None:
    images = held_out_set.images[:6]
    assert all(p.label in CLASSES for p in classifier.predict(images, abstain_below=0.0))
    unsure = classifier.predict(images, abstain_below=0.999999)
    assert {p.label for p in unsure} <= {INDETERMINATE, *CLASSES}
    blank = np.full((32, 32, 3), 128, dtype=np.uint8)
    pred = classifier.predict([blank], abstain_below=0.99)[0]
    assert pred.indeterminate == (max(pred.probabilities.values()) < 0.99)
    assert pred.top_class in CLASSES


def test_tta_averages_views_into_a_probability(classifier: Classifier, held_out_set) -> None:
    plain = classifier.predict(held_out_set.images[:6])
    tta = classifier.predict(held_out_set.images[:6], tta=True)
    for p in tta:
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
    agree = sum(a.top_class == b.top_class for a, b in zip(plain, tta, strict=True))
    assert agree >= 5


def test_heatmap_has_the_image_shape_and_peaks_in_the_lesion(tiny_artifact) -> None:
    from pathlib import Path

    from models.training import TrainingConfig, train_model

    data = make_composites(classes=CLASSES, patients_per_class=8, size=48, seed=3, noise=0.05)
    config = TrainingConfig(architecture="tinycnn", folds=2, epochs=8, batch_size=16, input_size=48,
                            random_init=True, patience=8, seed=1)
    trained = train_model(data.images, data.labels, data.patient_ids, classes=CLASSES, config=config,
                          registry=default_registry(), weights_dir=Path("/nonexistent"))
    import tempfile

    from models.artifact import save_trained

    artifact = save_trained(trained, Path(tempfile.mkdtemp()), task="t", channel_recipe=["a", "b", "c"])
    classifier = Classifier(artifact, registry=default_registry())
    test = make_composites(classes=CLASSES, patients_per_class=4, lesions_per_patient=1, size=48, seed=4, noise=0.05)
    # a non-square copy: heatmaps come back at each image's own shape
    wide = np.concatenate([test.images[0], test.images[0][:, :16]], axis=1)
    assert classifier.predict([wide], explain=True)[0].heatmap.shape == (48, 64)
    predictions = classifier.predict(test.images, explain=True)
    inside = 0
    for prediction, mask in zip(predictions, test.masks, strict=True):
        heatmap = prediction.heatmap
        assert heatmap.shape == mask.shape and heatmap.dtype == np.float32
        assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
        peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        inside += bool(mask[peak])
    assert inside >= 0.75 * len(predictions)


def test_misregistration_moves_one_channel_only() -> None:
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[10:20, 10:20, :] = 255
    moved = misregister(image, channel=0, shift_px=(5, 0))
    assert np.allclose(moved[:, :, 1:], image[:, :, 1:] / 255.0)
    assert moved[15, 22, 0] > 0.9 and moved[15, 12, 0] < 0.1  # shifted right by 5 px
    rotated = misregister(image, channel=2, rotation_deg=10.0, skew_deg=5.0)
    assert not np.allclose(rotated[:, :, 2], image[:, :, 2] / 255.0)
    with pytest.raises(ValueError, match="channel"):
        misregister(image, channel=3)


def test_augmentation_is_reproducible_from_its_seed() -> None:
    import torch

    batch = to_input_tensor(make_composites(classes=CLASSES, patients_per_class=1, size=24).images,
                            Preprocessing(input_size=24))
    first = augment(batch, Augmentation(), torch.Generator().manual_seed(3))
    second = augment(batch, Augmentation(), torch.Generator().manual_seed(3))
    assert torch.equal(first, second) and not torch.equal(first, batch)
    assert torch.equal(augment(batch, Augmentation(enabled=False), torch.Generator()), batch)
