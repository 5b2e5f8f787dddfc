#!/usr/bin/env bash
# Download the wheels of bench/gpu_wheels.txt into .whl/ for the GPU machine (CPython 3.12, manylinux x86-64),
# here on a CPU machine with internet access to PyPI. A package published only as source (pure Python) is
# built into a wheel here. The machine has no internet: bench/gpu_campaign.sh installs from .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^\s*#' bench/gpu_wheels.txt | grep -v '^\s*$' | while read -r spec; do
  if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       "${PLATFORMS[@]}" -d .whl "$spec" 2>/dev/null; then
    echo "fetch_gpu_wheels: no binary wheel for $spec: building one (pure Python)"
    python3 -m pip wheel -q --no-deps -w .whl "$spec"
  fi
done
ls -1 .whl
du -sh .whl
