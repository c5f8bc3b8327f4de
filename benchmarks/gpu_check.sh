#!/usr/bin/env bash
# Everything one GPU lease runs (issues 10 and 19), in at most 9 minutes on one H200:
# sets up Python, runs the device check (benchmarks/gpu_check.py: CUDA tests, loss speed,
# train step) and then the Fashion-MNIST-LT evidence runs (benchmarks/gpu_evidence.py, their
# run folders in $TMPDIR/dscl_gpu_evidence),
# and prints both tables.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [--wheels DIR] [--device cpu] [--quick]
#        [--check-budget S] [--evidence-budget S] [-- gpu_evidence.py options]
#
# Uses the machine's Python (PYTHON, default python3) with its torch and torchvision. With
# --wheels DIR it first installs the wheels in DIR (made by benchmarks/gpu_wheels.sh where
# a package index is reachable) by name, from that folder only (--find-links: pip takes
# the kornia_rs wheel that matches this Python), into /tmp/dscl-gpu-site, and puts that
# folder on PYTHONPATH. (An overlay folder, not a venv: a venv made from a Python that is
# itself a venv would not see that venv's torch.) No network is used.
#
# Budgets: the device check gets --check-budget seconds (default 160), the evidence runs
# --evidence-budget (default 340; its first wave is 50 epochs, see gpu_evidence.py);
# with ~20 s of set-up the whole lasts <= 9 minutes. --device cpu (and --quick for the
# evidence runs' tiny sizes) is the dry run on a CPU. OUT_DIR gets at most 8 files:
# summary.json, summary.csv, loss_speed.csv, train_step.csv, pytest.xml, gpu_check.log
# (every stage's output), gpu_evidence_runs.jsonl and gpu_evidence.json. The exit status
# is the larger of the two scripts'. Where benchmarks/results/gpu_evidence_runs.jsonl (the
# runs of earlier leases, committed) exists, the evidence runs resume from it.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
out="" wheels="" device=cuda check_budget=160 evidence_budget=340 quick=() evidence=()
while (($#)); do
  case "$1" in
    --wheels) wheels="$(cd "$2" && pwd)"; shift ;;
    --device) device="$2"; shift ;;
    --check-budget) check_budget="$2"; shift ;;
    --evidence-budget) evidence_budget="$2"; shift ;;
    --quick) quick=(--quick) ;;
    --) shift; evidence=("$@"); break ;;
    *) if [[ -z "$out" && "$1" != -* ]]; then out="$1"; else
         echo "gpu_check: unknown option $1 (gpu_evidence.py options go after --)" >&2; exit 2
       fi ;;
  esac
  shift
done
if [[ -z "$out" ]]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--wheels DIR] [--device cpu] [--quick]" \
    "[--check-budget S] [--evidence-budget S] [-- gpu_evidence.py options]" >&2
  exit 2
fi
if [[ -n "$wheels" ]]; then
  site=/tmp/dscl-gpu-site
  names="$(for w in "$wheels"/*.whl; do basename "$w" | cut -d- -f1; done | sort -u)"
  "$python" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
    --find-links "$wheels" $names
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
missing="$("$python" - <<'PY'
import importlib.util
names = ["torch", "torchvision", "lightly", "pytorch_metric_learning", "pytorch_lightning",
         "omegaconf", "yaml", "sklearn", "matplotlib", "pytest", "kornia"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
PY
)"
if [[ -n "$missing" ]]; then
  echo "gpu_check: $python lacks: $missing (bring them as wheels: --wheels DIR)" >&2
  exit 2
fi
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # the package from this tree, not installed
resume=()  # a later lease continues the committed runs with the next seeds
committed=benchmarks/results/gpu_evidence_runs.jsonl
if [[ -f "$committed" && ${#quick[@]} -eq 0 ]]; then resume=(--resume "$committed"); fi
status=0
"$python" -m benchmarks.gpu_check "$out" --device "$device" --budget "$check_budget" || status=$?
"$python" -m benchmarks.gpu_evidence "$out" --device "$device" --budget "$evidence_budget" \
  --log "$out/gpu_check.log" --epochs 50 "${quick[@]}" "${resume[@]}" "${evidence[@]}" || {
  rc=$?; ((rc > status)) && status=$rc; }
exit "$status"
