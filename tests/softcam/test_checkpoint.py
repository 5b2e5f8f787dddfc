"""SoftCAM checkpoints round-trip through safetensors, strictly."""
from __future__ import annotations

import pytest
import torch

from fastcam import softcam
from fastcam.models import tiny_vgg
from fastcam.softcam import convert

pytestmark = pytest.mark.usefixtures("one_thread")


def test_save_load_round_trip_and_strictness(tmp_path) -> None:  # noqa: ANN001
    net = convert(tiny_vgg(), 3, vgg_hidden=8)
    path = softcam.save(net, tmp_path / "sub" / "w.safetensors")
    other = convert(tiny_vgg(), 3, vgg_hidden=8)
    softcam.load(other, path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    with pytest.raises(RuntimeError):
        softcam.load(convert(tiny_vgg(), 4, vgg_hidden=8), path)
    with pytest.raises(FileNotFoundError):
        softcam.load(net, tmp_path / "missing.safetensors")
