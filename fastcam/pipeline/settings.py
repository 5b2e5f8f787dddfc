"""A run's settings: the record of everything that changes its results, and the resume check against it.

A run directory resumes only under the settings it was written with; `check_settings` refuses any
other call, naming each difference.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastcam.io.run import RunDirectory
from fastcam.models.loading import state_hash  # noqa: F401 - re-exported (its home before fastcam.models)


def _describe(value: Any) -> str:
    """A JSON stand-in for an object: a function by its import path (stable across processes, unlike
    its repr's address), anything else by its repr (fastcam.reshape's layouts have stable ones)."""
    if callable(value) and hasattr(value, "__qualname__") and hasattr(value, "__module__"):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, unknown objects a stable description)."""
    return json.loads(json.dumps(value, default=_describe, sort_keys=True))


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as compared for a resume: the weights file's *path* is only a record (moving the file is
    fine); its content is compared through the model's state_sha256."""
    model = {k: v for k, v in settings.get("model", {}).items() if k != "weights"}
    return {**settings, "model": model}


def check_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse a run directory written with other settings, naming every difference."""
    old = RunDirectory(run_dir).read_meta().get("settings", {})
    a, b = _comparable(old), _comparable(settings)
    if a == b:
        return
    keys = sorted(set(old) | set(settings))
    diffs = [f"  {k}: run has {json.dumps(a.get(k))[:200]}, this call has {json.dumps(b.get(k))[:200]}"
             for k in keys if a.get(k) != b.get(k)]
    raise ValueError(f"run directory {str(run_dir)!r} was written with other settings; refusing to mix results. "
                     "Use another out= (the CLI's --out), or delete the directory to start over. Differences:\n" + "\n".join(diffs))
