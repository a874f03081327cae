"""Fixtures for model tests: a registry, synthetic composites, and one small model trained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.architectures import default_registry
from models.registry import Registry
from tests.models.synthetic import SyntheticSet, make_composites

CLASSES = ["early_hcc", "progressed_hcc", "non_hcc_cc"]


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def registry() -> Registry:
    return default_registry()


@pytest.fixture(scope="session")
def train_set() -> SyntheticSet:
    return make_composites(classes=CLASSES, patients_per_class=8, lesions_per_patient=2, size=32, seed=1)


@pytest.fixture(scope="session")
def held_out_set() -> SyntheticSet:
    return make_composites(classes=CLASSES, patients_per_class=5, size=32, seed=2, patient_prefix="H")


@pytest.fixture(scope="session")
def trained_tiny(train_set: SyntheticSet):
    from models.training import TrainingConfig, train_model

    config = TrainingConfig(architecture="tinycnn", mode="finetune", folds=3, epochs=10, batch_size=16,
                            input_size=32, random_init=True, patience=3, seed=7)
    return train_model(train_set.images, train_set.labels, train_set.patient_ids, classes=CLASSES, config=config,
                       registry=default_registry(), weights_dir=Path("/nonexistent"))


@pytest.fixture(scope="session")
def tiny_artifact(trained_tiny, tmp_path_factory: pytest.TempPathFactory):
    from models.artifact import save_trained

    return save_trained(trained_tiny, tmp_path_factory.mktemp("models"), task="test-task",
                        channel_recipe=["arterial", "delayed", "pre"], windowing={"arterial": [40, 350]})
