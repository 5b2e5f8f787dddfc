"""`fastcam.serve` loads lazily: importing fastcam (its CLI, its serve package) imports neither Ray nor torch."""
from __future__ import annotations

import os
import subprocess
import sys


def test_importing_fastcam_imports_no_ray() -> None:
    code = ("import sys, fastcam, fastcam.cli, fastcam.serve; fastcam.cli.build_parser(); "
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules, 'imported'")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).returncode == 0
