"""Devices and autocast names, one place for every command (explain, eval, bench, export, serve, training).

- `AMP_NAMES` / `AMP_DTYPES`: the autocast names the CLI and the run settings use ("bf16", "fp16"; None
  for none) and their dtypes;
- `check_amp`: such a name (or a torch dtype) checked and turned into the autocast dtype;
- `default_device`: CUDA when available, else the CPU;
- `parse_device`: a device the user named, refused with the fix when it is not one or not here.

Importing this module does not import torch (`fastcam --help` reads `AMP_NAMES`): torch loads with the
first function call or `AMP_DTYPES`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["AMP_DTYPES", "AMP_NAMES", "check_amp", "default_device", "parse_device"]

#: autocast name -> torch dtype name; the names the CLI's --amp and run.json's "amp" use
_AMP_TORCH_NAMES = {"bf16": "bfloat16", "fp16": "float16"}
AMP_NAMES: tuple[str, ...] = tuple(_AMP_TORCH_NAMES)
#: torch's own names of the same dtypes, accepted where a Python caller passes them
_AMP_ALIASES = {torch_name: name for name, torch_name in _AMP_TORCH_NAMES.items()}


def __getattr__(name: str) -> Any:
    """`AMP_DTYPES`, built on first use (it needs torch): autocast name -> dtype, None -> None."""
    if name == "AMP_DTYPES":
        import torch

        return {**{n: getattr(torch, t) for n, t in _AMP_TORCH_NAMES.items()}, None: None}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_amp(amp: str | torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype of `amp`: None, "bf16"/"bfloat16"/torch.bfloat16 or "fp16"/"float16"/torch.float16.

    Raises:
        ValueError: for anything else, naming what is accepted.
    """
    import torch

    if amp is None:
        return None
    if isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        return amp
    if isinstance(amp, str) and _AMP_ALIASES.get(amp, amp) in _AMP_TORCH_NAMES:
        return getattr(torch, _AMP_TORCH_NAMES[_AMP_ALIASES.get(amp, amp)])  # type: ignore[no-any-return]
    raise ValueError(f"amp must be None, 'bf16' (torch.bfloat16) or 'fp16' (torch.float16), got {amp!r}")


def default_device() -> str:
    """"cuda" when a CUDA GPU is available here, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(device: str | torch.device) -> torch.device:
    """A device the user named, refused with a ValueError saying what to do when it is not a device or is
    not available here (CUDA without a GPU, a GPU index past the last one)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {str(device)!r} is not a device: use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} needs a CUDA GPU, but none is available here "
                             "(torch.cuda.is_available() is False); use device='cpu' (the CLI's --device cpu)") from None
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif parsed.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} is not available here; use device='cpu' (the CLI's --device cpu)")
    return parsed
