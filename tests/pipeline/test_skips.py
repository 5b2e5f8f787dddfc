"""A run whose skipped samples show a problem with the whole run stops (exit status 2 from the CLI) and is
never marked complete: the first samples all failing for one reason, or more than max_skip_fraction of
them. Files deliberately not read (hidden) do not count."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch.utils.data import Dataset

from fastcam.errors import TooManySkippedError
from fastcam.pipeline import explain_dataset
from fastcam.pipeline.skips import FIRST_SAMPLES, SkipGuard, reason_kind


def test_guard_rules() -> None:
    guard = SkipGuard(0.1, total=100)
    guard.add((i, i, "TypeError: no") for i in range(FIRST_SAMPLES - 1))
    guard.check()  # 7 alike: not yet
    guard.add([(7, 7, "TypeError: no")])
    with pytest.raises(TooManySkippedError, match=r"the first 8 samples all failed for the same reason \(TypeError\)"):
        guard.check()
    mixed = SkipGuard(0.1, total=100)  # different reasons: only the share rule
    mixed.add([(0, 0, "OSError: a"), (1, 1, "ValueError: b")] * 5)
    mixed.add((i, i, None) for i in range(10, 89))
    mixed.check()  # 10 of 100 failed: not more than 0.1
    mixed.add([(99, 99, "OSError: c")])
    with pytest.raises(TooManySkippedError, match=r"11 of 100 samples .* most common reason \(6\): OSError") as info:
        mixed.check()
    assert (info.value.failed, info.value.total, info.value.reasons) == (11, 100, {"OSError": 6, "ValueError": 5})
    hidden = SkipGuard(0.1, total=20, not_read=lambda index: index < 10)  # ten hidden files: not counted
    hidden.add((i, i, "hidden file") for i in range(10))
    hidden.add((i, i, None) for i in range(10, 18))
    hidden.add([(18, 18, "OSError: x"), (19, 19, "OSError: y")])
    with pytest.raises(TooManySkippedError, match="2 of 10 samples"):  # 2 of 20 would be allowed
        hidden.check()
    never = SkipGuard(1.0, total=4)
    never.add((i, i, "TypeError: no") for i in range(4))
    never.check()
    assert reason_kind("non-finite explanation: logits contain NaN") == "non-finite explanation"
    with pytest.raises(ValueError, match=r"max_skip_fraction must lie in \[0, 1\]"):
        SkipGuard(1.5, total=4)


class _Strings(Dataset):
    """A dataset whose items are of a type fastcam does not read: every one fails the same way."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": f"image-{index}.png", "label": 0}


def test_a_run_whose_every_item_fails_stops_and_is_not_complete(tmp_path: Path, classifier: Callable[..., Any]) -> None:
    """explain_dataset returned normally with 0 explained, the run complete."""
    with pytest.raises(TooManySkippedError, match=r"first 4 samples all failed .*TypeError.*max_skip_fraction=1\.0"):
        explain_dataset(classifier(), _Strings(), method="gradcam", target_layer="layer4", out=tmp_path / "run",
                        batch_size=4, progress=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text()).get("complete") is not True
    with pytest.raises(TooManySkippedError):  # the same call again: resumes, and stops again at once
        explain_dataset(classifier(), _Strings(), method="gradcam", target_layer="layer4", out=tmp_path / "run",
                        batch_size=4, progress=False)
    run = explain_dataset(classifier(), _Strings(), method="gradcam", target_layer="layer4", out=tmp_path / "run",
                          batch_size=4, progress=False, max_skip_fraction=1.0)  # allowed: completes, all listed
    assert len(run.ids) == 0 and len(run.skipped) == 12 and run.meta["complete"] is True


def test_more_than_the_share_skipped_stops(tmp_path: Path, classifier: Callable[..., Any],
                                           write_images: Callable[..., list[str]]) -> None:
    data = tmp_path / "data"
    write_images(data, 16)
    for name in ("a.png", "b.jpg"):  # 2 of 18 files (11 %) cannot be read
        (data / name).write_bytes(b"not an image")
    (data / ".hidden.png").write_bytes(b"")  # deliberately not read: does not count
    with pytest.raises(TooManySkippedError, match=r"2 of 18 samples could not be explained, more than "
                                                  r"max_skip_fraction=0\.1"):
        explain_dataset(classifier(), data, method="gradcam", target_layer="layer4", out=tmp_path / "run",
                        batch_size=8, progress=False)
    run = explain_dataset(classifier(), data, method="gradcam", target_layer="layer4", out=tmp_path / "run",
                          batch_size=8, progress=False, max_skip_fraction=0.2)  # resumes and completes
    assert len(run.ids) == 16 and {s["id"] for s in run.skipped} == {"a.png", "b.jpg", ".hidden.png"}
    assert torch.isfinite(run.lowres).all()
