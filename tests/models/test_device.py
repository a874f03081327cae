"""The device choice and its numeric settings, CUDA's included, checked on a machine without one."""

from __future__ import annotations

import warnings

import pytest
import torch

from models.device import autocast, deterministic, memory_format, resolve_device

CUDA = torch.device("cuda")


def test_auto_takes_cuda_only_when_there_is_one() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_asking_for_cuda_without_it_is_an_error_not_a_silent_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without one
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")
    assert resolve_device("auto").type == "cpu"


def test_cuda_gets_bf16_autocast_and_channels_last_and_the_cpu_full_precision() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that it would disable autocast here
        on_cuda = autocast(CUDA)
    assert isinstance(on_cuda, torch.autocast) and on_cuda.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(CUDA, enabled=False), torch.autocast)
    assert not isinstance(autocast(torch.device("cpu")), torch.autocast)
    assert memory_format(CUDA) == torch.channels_last
    assert memory_format(CUDA, channels_last=False) == torch.contiguous_format
    assert memory_format(torch.device("cpu")) == torch.contiguous_format


def test_deterministic_cudnn_only_for_the_block() -> None:
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.benchmark = True
    try:
        with deterministic(CUDA):
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
