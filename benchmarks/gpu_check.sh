#!/usr/bin/env bash
# The prepared device check (issue 10): sets up Python, then runs benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [--wheels DIR] [gpu_check.py options]
#
# Uses the machine's Python (PYTHON, default python3) with its torch and torchvision. With
# --wheels DIR it first installs every wheel in DIR (the project's pure-Python
# dependencies that Python lacks, made by benchmarks/gpu_wheels.sh where a package index
# is reachable) into /tmp/dscl-gpu-site, from that folder only, and puts it on PYTHONPATH.
# (An overlay folder, not a venv: a venv made from a Python that is itself a venv would
# not see that venv's torch.) No network is used. Options after these go to
# gpu_check.py, e.g. --device cpu for the smoke run or --budget SECONDS.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
out="" wheels="" rest=()
while (($#)); do
  case "$1" in
    --wheels) wheels="$(cd "$2" && pwd)"; shift ;;
    *) if [[ -z "$out" && "$1" != -* ]]; then out="$1"; else rest+=("$1"); fi ;;
  esac
  shift
done
if [[ -z "$out" ]]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--wheels DIR] [gpu_check.py options]" >&2
  exit 2
fi
if [[ -n "$wheels" ]]; then
  site=/tmp/dscl-gpu-site
  "$python" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
    "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
missing="$("$python" - <<'EOF'
import importlib.util
names = ["torch", "torchvision", "lightly", "pytorch_metric_learning", "pytorch_lightning",
         "omegaconf", "yaml", "sklearn", "matplotlib", "pytest"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
EOF
)"
if [[ -n "$missing" ]]; then
  echo "gpu_check: $python lacks: $missing (bring them as wheels: --wheels DIR)" >&2
  exit 2
fi
cd "$repo"
exec "$python" benchmarks/gpu_check.py "$out" "${rest[@]}"
