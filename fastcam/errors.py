"""Every error (and warning) class of fastcam, shared by the library and the command line (no torch import
here, so `fastcam --help` stays light): the CLI turns each error into a one-line message and exit status 2.

The modules that raise them re-export them where they were defined before (`fastcam._validation`,
`fastcam.evaluate.inputs`, `fastcam.deploy.heads`, `fastcam.pipeline.explain`).
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["ImageTooLargeError", "ModelMismatch", "NonFiniteError", "NotPooledLinearError", "RandomWeightsWarning",
           "RunDamagedError", "RunLockLostError", "RunLockedError", "TooManySkippedError", "UninformativeMapWarning",
           "UntrustedRunError"]


class RunLockedError(RuntimeError):
    """Another process is writing the run directory (it holds the directory's writer lock).

    Attributes:
        path: the run directory.
        holder: what the holder wrote into the lock file: "pid", "host", "started" (may be empty when it
            has not written it yet).
    """

    def __init__(self, path: str, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        if holder.get("pid"):
            who = (f"PID {holder['pid']} on host {holder.get('host', '?')}, writing since "
                   f"{holder.get('started', '?')}")
        else:
            who = "a process that has not yet recorded its PID"
        super().__init__(f"run directory {path!r} is being written by another fastcam process ({who}); "
                         "wait for it to finish (then re-run this command to resume or check it), "
                         "or choose another --out")


class RunLockLostError(RunLockedError):
    """This process's writer lock file was deleted or replaced while it wrote the run, so another writer
    may have locked a new file and be writing too: the writer stops before its next commit.

    Attributes:
        path: the run directory; lock: the lock file.
    """

    def __init__(self, path: str, lock: str) -> None:
        self.path, self.lock, self.holder = path, lock, {}
        RuntimeError.__init__(self, f"the writer lock {lock!r} of run directory {path!r} was deleted or replaced while "
                                    "this process was writing it, so another writer may be writing it too: stopped "
                                    "before the next commit. Make sure no other fastcam process writes it, then "
                                    "re-run the command to resume (`fastcam verify` checks the run)")


class RunDamagedError(ValueError):
    """A run directory's store does not read back as it was written: missing, truncated or altered files.

    Attributes:
        path: the run directory; damages: every problem found (`fastcam.io.run.Damage`).
    """

    def __init__(self, path: str, damages: Sequence[Any]) -> None:
        self.path, self.damages = path, list(damages)
        shown = "; ".join(str(d) for d in self.damages[:4])
        more = f"; and {len(self.damages) - 4} more" if len(self.damages) > 4 else ""
        super().__init__(f"run directory {path!r} is damaged: {shown}{more}. Re-run the same `fastcam explain` "
                         f"command to recompute the damaged batches (`fastcam verify {path}` lists every problem)")


class UntrustedRunError(ValueError):
    """A run directory names code to import (its model spec); it is not run unless the user says so."""


class NonFiniteError(ValueError):
    """A batch produced NaN/Inf somewhere on the way to its maps (pixels, logits, activations, gradients).

    Attributes:
        indices: positions in the batch of the offending images (sorted).
        reason: what was non-finite, e.g. "the model's logits".
    The pipeline catches it, skips exactly these images with the reason, and explains the rest.
    """

    def __init__(self, reason: str, indices: Sequence[int]) -> None:
        self.reason = reason
        self.indices = sorted(int(i) for i in indices)
        shown = ", ".join(map(str, self.indices[:10])) + (", ..." if len(self.indices) > 10 else "")
        super().__init__(f"{reason} contain NaN or Inf for image(s) {shown} of the batch")


class ModelMismatch(ValueError):
    """The model given or recorded for a run is not the one the run explained (its weights differ)."""


class NotPooledLinearError(ValueError):
    """The model after the target layer is not "[ReLU] → global average pool → [flatten/dropout] → Linear"."""


class TooManySkippedError(ValueError):
    """A run stopped because its skipped samples show a problem with the whole run, not a few bad files
    (`fastcam.pipeline.skips`): the run directory keeps what was committed and is not marked complete.

    Attributes:
        failed: samples that could not be explained so far (files deliberately not read are not counted).
        total: samples counted (this rank's, under torchrun).
        reasons: how many failed per kind of error (the text before the error's first ":").
    """

    def __init__(self, message: str, failed: int, total: int, reasons: dict[str, int]) -> None:
        self.failed, self.total, self.reasons = failed, total, reasons
        super().__init__(message)


class RandomWeightsWarning(UserWarning):
    """A run explains a model left with its random initialisation (no weights file for a spec that
    builds one): printed, and recorded in run.json (`settings.model.random_weights`)."""


class ImageTooLargeError(ValueError):
    """An encoded image holds more pixels than the reader's limit (`fastcam.io.images.decode_image`'s
    `max_pixels`, or Pillow's own decompression-bomb check): refused before its pixels are decoded."""


class UninformativeMapWarning(UserWarning):
    """A target layer's maps cannot say where the evidence is: they are 1×1 (1×1×1 for volumes), so every
    upsampled map is constant (all ones, or all zeros for the Eigen methods). The message names an earlier
    layer with a larger map."""
