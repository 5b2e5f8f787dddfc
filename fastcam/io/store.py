"""The run store's former module: every name now lives in `fastcam.io.run` (split by job: durable files,
damage, schema, layout, check, writer, reader) and is re-exported here, so existing imports keep working.

`DURABLE` and `FSYNC_THREADS` are settings of `fastcam.io.run.durable`; reading or setting them here reads
or sets them there.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from fastcam.io.run import *  # noqa: F401,F403 - the re-exported names
from fastcam.io.run import __all__ as _run_all

__all__ = [*_run_all, "DURABLE", "FSYNC_THREADS"]
_SETTINGS = ("DURABLE", "FSYNC_THREADS")


def __getattr__(name: str) -> Any:
    """`DURABLE` and `FSYNC_THREADS`, read from `fastcam.io.run.durable` (their one place)."""
    if name in _SETTINGS:
        from fastcam.io.run import durable

        return getattr(durable, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _StoreModule(types.ModuleType):
    """This module, forwarding `DURABLE` and `FSYNC_THREADS` assignments to `fastcam.io.run.durable`."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS:
            from fastcam.io.run import durable

            setattr(durable, name, value)
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _StoreModule
