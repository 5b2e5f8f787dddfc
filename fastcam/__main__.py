"""`python -m fastcam ...` (and `torchrun --nproc_per_node=N -m fastcam explain ...`) run the CLI."""
import sys

from fastcam.cli import main

if __name__ == "__main__":
    sys.exit(main())
