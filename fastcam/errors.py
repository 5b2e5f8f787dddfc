"""Errors a user can cause and fix, shared by the library and the command line (no torch import here, so
`fastcam --help` stays light): the CLI turns each into a one-line message and exit status 2."""
from __future__ import annotations

from typing import Any, Sequence


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
