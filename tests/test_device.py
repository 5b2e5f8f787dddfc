"""fastcam._device: the AMP names and devices every command shares."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fastcam._device import AMP_DTYPES, AMP_NAMES, check_amp, default_device, parse_device


def test_amp_names_and_dtypes() -> None:
    assert AMP_NAMES == ("bf16", "fp16") and AMP_DTYPES == {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}
    for given, dtype in [(None, None), ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), (torch.float16, torch.float16),
                         ("fp16", torch.float16), ("float16", torch.float16)]:
        assert check_amp(given) is dtype
    for bad in ("fp32", "", torch.float32, 16):
        with pytest.raises(ValueError, match="amp must be None, 'bf16'"):
            check_amp(bad)  # type: ignore[arg-type]


def test_devices() -> None:
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="is not a device"):
        parse_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            parse_device("cuda")


def test_importing_it_does_not_import_torch() -> None:
    """`fastcam --help` reads AMP_NAMES: the module must not pull torch in."""
    code = "import sys, fastcam._device as d; assert d.AMP_NAMES; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
