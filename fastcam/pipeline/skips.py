"""When skipped samples mean the run is wrong, not that a few files are bad: the run stops.

A sample that cannot be explained (an unreadable file, an item of the wrong type, a non-finite
explanation) is skipped and listed with its reason. That suits a few bad files; it hides a mistake that
hits every sample (a preprocessing the model cannot take, items of a type fastcam does not read). So a
run stops with `fastcam.errors.TooManySkippedError` (the CLI: exit status 2 and the reason), never marked
complete, when

- the first samples (`FIRST_SAMPLES`, or all of them when fewer) all failed for the same kind of reason
  before any was explained: it stops at once instead of skipping the whole dataset one by one; or
- more than `max_skip_fraction` of the samples failed (default `DEFAULT_MAX_SKIP_FRACTION`): it stops as
  soon as that share is certain, and at the end.

Files that are deliberately not read (hidden files, broken links: `fastcam.io.images.skip_reason`) are
not counted. Under torchrun each rank counts its own shard. `max_skip_fraction=1.0` turns both rules off.
The committed batches stay: the same call (the same command) resumes, and stops again for the same reason
until it is fixed or allowed.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

from fastcam.errors import TooManySkippedError

#: the share of a run's samples that may be skipped before it stops (explain_dataset's max_skip_fraction)
DEFAULT_MAX_SKIP_FRACTION = 0.1
#: when this many samples (or all, when fewer) failed for one reason before any was explained, the run stops
FIRST_SAMPLES = 8

__all__ = ["DEFAULT_MAX_SKIP_FRACTION", "FIRST_SAMPLES", "SkipGuard", "check_max_skip_fraction", "reason_kind"]


def check_max_skip_fraction(value: Any) -> float:
    """`max_skip_fraction` as a float in [0, 1], else a ValueError/TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"max_skip_fraction must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"max_skip_fraction must lie in [0, 1] (a share of the samples), got {value!r}")
    return float(value)


def reason_kind(error: str) -> str:
    """The kind of a skip reason: its text before the first ":" ("TypeError", "non-finite explanation")."""
    return error.split(":", 1)[0].strip()


class SkipGuard:
    """Counts one shard's explained and failed samples and raises `TooManySkippedError` by the rules of
    this module. `total`: the shard's samples; `not_read(index)`: whether a dataset index is a file that
    is deliberately not read (not counted)."""

    def __init__(self, max_fraction: float, total: int, not_read: Callable[[int], bool] = lambda index: False) -> None:
        self.max_fraction = check_max_skip_fraction(max_fraction)
        self.total = total
        self.not_read = not_read
        self.ignored = 0
        self.explained = 0
        self.failed: Counter[str] = Counter()
        self.example: dict[str, tuple[Any, str]] = {}

    def add(self, samples: Iterable[tuple[int, Any, str | None]]) -> None:
        """Count samples (dataset index, id, error or None when explained)."""
        for index, sample_id, error in samples:
            if error is not None and self.not_read(index):
                self.ignored += 1
            elif error is None:
                self.explained += 1
            else:
                kind = reason_kind(error)
                self.failed[kind] += 1
                self.example.setdefault(kind, (sample_id, error))

    def check(self) -> None:
        """Raise when a rule is broken. Counts only grow (failures) or shrink (the samples counted, as files
        not read turn up), so a broken rule stays broken: stopping early never stops a run that would pass."""
        if self.max_fraction >= 1.0:
            return
        failed = sum(self.failed.values())
        counted = self.total - self.ignored  # files not read further on still count: at least the final count
        hint = ("Fix the cause, or let the run skip them with max_skip_fraction=1.0 (fastcam explain: "
                "--max-skip-fraction 1). The run is not complete; the same call resumes it.")
        one_reason = self.explained == 0 and len(self.failed) == 1
        if not (one_reason and failed >= min(FIRST_SAMPLES, counted)) and failed <= self.max_fraction * counted:
            return
        kind, count = self.failed.most_common(1)[0]
        sample_id, error = self.example[kind]
        if one_reason:
            raise TooManySkippedError(
                f"stopped: the first {failed} samples all failed for the same reason ({kind}), so every other "
                f"one would too; e.g. sample {sample_id!r}: {error}. {hint}", failed, counted, dict(self.failed))
        raise TooManySkippedError(
            f"stopped: {failed} of {counted} samples could not be explained, more than max_skip_fraction="
            f"{self.max_fraction:g} of them; the most common reason ({count}): {kind}, e.g. sample {sample_id!r}: "
            f"{error}. Fix the cause, or allow more with a larger max_skip_fraction= (fastcam explain: "
            "--max-skip-fraction). The run is not complete; the same call resumes it.", failed, counted,
            dict(self.failed))
