"""The `fastcam` command line (also `python -m fastcam`, and `torchrun ... -m fastcam`).

One module per sub-command (`explain`, `demo`, `report`, `bench`, `eval`, `export`, `verify`, `serve`), each with `add_parser(sub)`,
which declares its flags, and `run(args)`, which turns them into keyword arguments of a library
function: argparse ends here. `SUBCOMMANDS` registers them in one place. Heavy imports (torch, zarr,
matplotlib) happen inside the `run` functions, so `fastcam --help` and `fastcam SUB --help` import no
torch (method names come from the torch-free registry).

    fastcam explain --model fastcam:tiny_resnet --weights w.safetensors --layer layer4 --method gradcam \\
        --data images/ --out runs/gradcam --overlays --report
    fastcam demo --out runs/demo
    fastcam report runs/demo/gradcam runs/demo/cfcam --out report.html
    fastcam export --method softcam --model fastcam:tiny_resnet --weights softcam.safetensors --out softcam.onnx
    fastcam verify runs/gradcam
    fastcam serve --model fastcam:tiny_resnet --weights w.safetensors --layer layer4 --size 64 64 --port 8000

Errors a user can fix (a bad flag value, a file that is not what it should be, a locked or damaged run)
end in a one-line message and exit status 2; `--debug` (on every sub-command) shows the traceback too.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from types import ModuleType
from typing import Sequence

from fastcam.cli import bench, demo, explain, export, report, serve, verify
from fastcam.cli import eval as evaluate
from fastcam.errors import RunLockedError

#: every sub-command, registered in one place: add yours here
SUBCOMMANDS: tuple[ModuleType, ...] = (explain, demo, report, bench, evaluate, export, verify, serve)

#: exceptions that are the user's to fix: a message and exit status 2, no traceback (unless --debug)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, FileExistsError,
                                                NotADirectoryError, IsADirectoryError, PermissionError,
                                                RunLockedError)

__all__ = ["SUBCOMMANDS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `fastcam` parser with every sub-command."""
    from fastcam import __version__

    parser = argparse.ArgumentParser(prog="fastcam", description="Fast, batched CNN explanations.")
    parser.add_argument("--version", action="version", version=f"fastcam {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS:
        command.add_parser(sub)
        sub.choices[command.NAME].add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                               help="show the traceback of an error")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fastcam` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:  # user errors: a clear message, no traceback
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"fastcam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastcam {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
