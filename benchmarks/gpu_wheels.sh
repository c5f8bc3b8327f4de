#!/usr/bin/env bash
# Wheels of the project's pure-Python dependencies that a bare CUDA image (torch,
# torchvision, pytorch-lightning, scikit-learn, matplotlib, pytest already there) lacks,
# at the versions installed here, for `benchmarks/gpu_check.sh OUT --wheels DIR`.
#
#   bash benchmarks/gpu_wheels.sh DIR      # needs a reachable package index
set -euo pipefail
dir="${1:?usage: bash benchmarks/gpu_wheels.sh DIR}"
python="${PYTHON:-python3}"
specs="$("$python" - <<'EOF'
from importlib.metadata import version
names = ["lightly", "pytorch-metric-learning", "hydra-core", "omegaconf", "antlr4-python3-runtime"]
print(" ".join(f"{n}=={version(n)}" for n in names))
EOF
)"
# `pip wheel` builds a wheel where the index has only a source archive (antlr4 4.9.3)
"$python" -m pip wheel -q --no-deps -w "$dir" $specs
ls "$dir"
