"""`fastcam verify`: check every file of a run directory; exit status 0 sound, 1 damaged, 2 usage error."""
from __future__ import annotations

import argparse

NAME = "verify"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare `fastcam verify` and its flags."""
    p = sub.add_parser(
        NAME,
        help="check a run directory: every committed chunk, the commit records, ids.json",
        description="Check a whole run directory without changing it: every committed chunk exists, has its size "
        "and passes its CRC-32C checksum; the commit records and ids.json are sound; no shard is missing. Also "
        "reports input files that changed since they were explained. Prints a summary; exit status 0 when the "
        "run is sound, 1 when it is damaged (re-run the same `fastcam explain` command to repair it), 2 on a "
        "usage error. Takes no lock: a run being written can be checked (what it has committed so far). Reads "
        "chunk by chunk: memory stays flat whatever the size of the run.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--no-inputs", action="store_true", help="do not compare the input files with their fingerprints")
    p.add_argument("--quiet", action="store_true", help="no progress bar (none is shown when stderr is not a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Verify each run, print a summary; 1 if any is damaged."""
    from tqdm.auto import tqdm

    from fastcam.errors import RunDamagedError
    from fastcam.io.run import STORE_FORMAT, require_run, verify_run

    status = 0
    for path in args.runs:
        try:  # a run.json that does not read back (garbage, edited fields) is damage, not a usage error
            total = int(require_run(path).read_meta()["n_samples"])
        except RunDamagedError as exc:
            print(f"{path}: run.json does not read back")
            for damage in exc.damages:
                print(f"  DAMAGED {damage}")
            status = 1
            continue
        with tqdm(total=total, desc=f"verify {path}", unit="sample", disable=True if args.quiet else None,
                  dynamic_ncols=True) as bar:
            result = verify_run(path, inputs=not args.no_inputs, on_batch=bar.update)
        if result.meta.get("fastcam_run") != STORE_FORMAT:
            print(f"{path}: store format {result.meta.get('fastcam_run')!r}, written before checksums: it cannot be "
                  "verified; explain it again into a new --out for a verified run")
            status = 1
            continue
        state = "complete" if result.complete else f"incomplete: {result.committed} of {result.batches} batches"
        print(f"{path}: {result.meta.get('method', '?')}, {result.n_samples} samples, {result.world_size} shard(s), "
              f"{result.batches} batches ({state}); {result.explained} explained, {result.skipped} skipped")
        for damage in result.damages:
            print(f"  DAMAGED {damage}")
        if result.changed_inputs:
            shown = ", ".join(repr(i) for i in result.changed_inputs[:5])
            print(f"  note: {len(result.changed_inputs)} input file(s) changed since they were explained ({shown}"
                  f"{', ...' if len(result.changed_inputs) > 5 else ''}); re-run `fastcam explain` to update them")
        if result.damages:
            status = 1
            print(f"  {len(result.damages)} problem(s): re-run the same `fastcam explain` command to recompute the "
                  "damaged batches")
        else:
            print("  OK: every committed chunk is present and passes its checksum")
    return status
