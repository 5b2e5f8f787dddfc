"""What run.json and ids.json may hold: run.json validated against one schema (`RunRecord`, pydantic), the
sample ids against the one rule of what names an input (`sample_id_problem`).

A run directory may come from anywhere (a colleague's share, an archive): an edited or hostile run.json
gets a `RunDamagedError` naming the field, never a raw KeyError or ZeroDivisionError deep in a reader,
and an id can never make a reader open something outside the data root (`/dev/zero`, a FIFO, `../x`).
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from fastcam.errors import RunDamagedError
from fastcam.io.run.damage import Damage
from fastcam.io.run.schema import RUN_JSON, STORE_FORMAT

PositiveInt = Annotated[StrictInt, Field(ge=1)]


class RunRecord(BaseModel):
    """The fields of run.json that readers rely on, with their types and ranges (other fields are kept as
    they are: timings, versions, skipped files, ...).

    Attributes:
        fastcam_run: the store format (1: written without checksums; 2: the current one).
        method: the method's registry id.
        settings: the settings the run was written with (`format`, `batch_size`, `world_size` and
            `data.ids_sha256` are cross-checked).
        batch_size: samples per batch (each shard's chunks hold one batch).
        world_size: shards (ranks) of the run.
        n_samples: samples of the dataset (ids.json holds as many).
        input_size: the model input's spatial size, or None.
        complete: whether every shard finished.
        ids_sha256: the SHA-256 of ids.json's JSON text as written (`ids_hash`).
    """

    model_config = ConfigDict(extra="allow", strict=True)

    fastcam_run: Literal[1, 2]
    method: StrictStr
    settings: dict[str, Any] = Field(default_factory=dict)
    batch_size: PositiveInt
    world_size: PositiveInt
    n_samples: Annotated[StrictInt, Field(ge=0)]
    input_size: list[PositiveInt] | None = None
    complete: StrictBool = False
    ids_sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


def ids_hash(ids: list[Any]) -> str:
    """The SHA-256 run.json records for ids.json (of the ids' compact JSON text)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def validate_meta(meta: Any, root: str | os.PathLike[str]) -> dict[str, Any]:
    """run.json's content, checked against `RunRecord` and its cross-field rules; `RunDamagedError` naming
    the first wrong field otherwise."""

    def damaged(problem: str) -> RunDamagedError:
        return RunDamagedError(str(root), [Damage(RUN_JSON, f"{problem}; the run's record was edited or damaged: "
                                                            "delete the directory and run again")])

    if not isinstance(meta, dict):
        raise damaged(f"is a JSON {type(meta).__name__}, not a fastcam run record")
    try:
        record = RunRecord.model_validate(meta)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(the record)"
        got = "missing" if error["type"] == "missing" else f"{error.get('input')!r}"
        raise damaged(f"field {field!r} is {got}: {error['msg']}") from None
    settings = record.settings
    if "format" in settings and settings["format"] != record.fastcam_run:
        raise damaged(f"field 'fastcam_run' is {record.fastcam_run!r}, but the run was written as store format "
                      f"{settings['format']!r} (settings.format)")
    for key in ("batch_size", "world_size"):
        if key in settings and settings[key] != getattr(record, key):
            raise damaged(f"field {key!r} is {getattr(record, key)!r}, but the run was written with "
                          f"{settings[key]!r} (settings.{key})")
    data = settings.get("data")
    written = data.get("ids_sha256") if isinstance(data, dict) else None
    if record.fastcam_run == STORE_FORMAT and record.ids_sha256 is None and not isinstance(written, str):
        raise damaged("field 'ids_sha256' is missing: a run of this format records the hash of its ids.json")
    return meta


def recorded_ids_hash(meta: dict[str, Any]) -> str | None:
    """The ids.json hash run.json records (its own field, or the pipeline's `settings.data.ids_sha256`)."""
    data = meta.get("settings", {}).get("data")
    return meta.get("ids_sha256") or (data.get("ids_sha256") if isinstance(data, dict) else None)


def sample_id_problem(sample_id: Any) -> str | None:
    """Why `sample_id` cannot be a run's sample id, or None. An id is a dataset index (an int >= 0) or a
    path relative to the data root that stays under it: not empty, not absolute (POSIX or Windows), no
    '..' part, no NUL."""
    if isinstance(sample_id, bool):
        return "is a bool"
    if isinstance(sample_id, int):
        return None if sample_id >= 0 else "is a negative index"
    if not isinstance(sample_id, str):
        return f"is a JSON {type(sample_id).__name__}, not a path or an index"
    if not sample_id or "\0" in sample_id:
        return "is empty or holds a NUL"
    posix, windows = PurePosixPath(sample_id), PureWindowsPath(sample_id)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or sample_id.startswith(("/", "\\")):
        return "is an absolute path"
    if ".." in posix.parts or ".." in windows.parts:
        return "has a '..' part"
    return None
