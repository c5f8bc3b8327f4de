#!/usr/bin/env bash
# Wheels of the project's dependencies that a bare CUDA image (torch, torchvision,
# pytorch-lightning, scikit-learn, matplotlib, pytest already there) lacks, at the versions
# installed here, for `benchmarks/gpu_check.sh OUT --wheels DIR`.
#
#   bash benchmarks/gpu_wheels.sh DIR      # needs a reachable package index
#
# Pure-Python ones once (`pip wheel` builds one where the index has only a source archive,
# antlr4 4.9.3); kornia_rs, a compiled one, twice: for CPython 3.12 manylinux x86_64 (the
# GPU machine) and for this Python (a dry run here). gpu_check.sh installs them by name
# with --find-links, so pip picks the wheel that matches its Python.
set -euo pipefail
dir="${1:?usage: bash benchmarks/gpu_wheels.sh DIR}"
python="${PYTHON:-python3}"
mkdir -p "$dir"
specs() {
  "$python" - "$@" <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))
PY
}
pure="$(specs lightly pytorch-metric-learning hydra-core omegaconf antlr4-python3-runtime kornia)"
binary="$(specs kornia_rs)"
"$python" -m pip wheel -q --no-deps -w "$dir" $pure
"$python" -m pip download -q --no-deps --only-binary=:all: -d "$dir" --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 $binary
"$python" -m pip download -q --no-deps --only-binary=:all: -d "$dir" $binary
ls "$dir"
