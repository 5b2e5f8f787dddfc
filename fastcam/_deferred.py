"""Host checks deferred for CUDA graph capture.

A host check reads a flag back from the device (one sync) and raises or falls back when it is False.
Inside `deferred_host_checks()` (used by `fastcam.graphed` while capturing and replaying a CUDA graph,
where a sync is not allowed), such checks instead register their flag tensor — all True when everything
is fine — and carry on as if it were. The caller reads every registered flag once after the work and,
if any is False, recomputes eagerly, where the check raises its clear error or takes its fallback path.
Thread-local: other threads' checks are never deferred.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

_state = threading.local()


@contextmanager
def deferred_host_checks() -> Iterator[list[Tensor]]:
    """Defer host checks in this thread for the duration; yields the list their flags are added to."""
    previous = getattr(_state, "flags", None)
    _state.flags = flags = []
    try:
        yield flags
    finally:
        _state.flags = previous


def deferring() -> bool:
    """Whether host checks are deferred in this thread (so a caller builds its flag only when needed)."""
    return getattr(_state, "flags", None) is not None


def defer(ok: Tensor) -> bool:
    """If host checks are deferred in this thread, keep `ok` (a bool tensor, all True when fine) and
    return True: the caller skips its sync and proceeds as if the check passed. Otherwise return False."""
    flags = getattr(_state, "flags", None)
    if flags is None:
        return False
    flags.append(ok.detach())
    return True
