#!/usr/bin/env bash
# Re-measure the numbers of README.md and docs/ that need the checked-out commit, on a quiet
# machine, and render the pages from the new result files (python -m tools.render_docs).
#
#   bash benchmarks/remeasure.sh --all                  # every part, then render
#   bash benchmarks/remeasure.sh --quickstart --setup   # some parts, then render
#   bash benchmarks/remeasure.sh --headline --dry-run /tmp/dry   # tiny settings, into /tmp/dry
#
# Parts, each writing under benchmarks/results/ (see docs/results.md#how-numbers-are-made):
#   --quickstart  python examples/train_digits_lt.py -> quickstart_digits_lt.json (its
#                 metrics.json with commit, machine, load and wall time)
#   --setup       the README set-up on a fresh clone of HEAD in a fresh venv, each step timed
#                 -> setup_timing.json, setup_timing.log
#   --benchmarks  benchmarks.train_step (and its fp32/bf16 precision table), .loss_speed,
#                 .import_time
#                 -> train_step.json, train_step_cpu_precision_amx.json, loss_speed.json,
#                 import_time.json
#   --headline    dscl-compare of SupCon, DSCL and DSCL+PBSD on Fashion-MNIST-LT, seed 0, in
#                 float32 (the committed runs were float32, made on a CPU without bf16; on a
#                 CPU with AMX-BF16 `precision: auto` would pick bf16), then
#                 benchmarks.pbsd_diagnostics on its DSCL+PBSD checkpoint
#                 -> headline_reproduction/{report.md,runs.jsonl,compare.png},
#                 pbsd_diagnostics_fashion_mnist_lt.json
#   --render      only python -m tools.render_docs (it also runs after any part)
#   --dry-run DIR tiny settings, results under DIR/results and the pages rendered from
#                 them under DIR/site: checks the script, measures nothing
#
# Every part prints its wall time; the result files record the load average. The runs of
# --headline stay in outputs/remeasure/headline, so an interrupted call resumes them.
# PYTHON (default: python) runs the scripts with this checkout on PYTHONPATH: it needs the
# project's dependencies (run from an activated development venv); PYTHON3 (default:
# python3) makes the --setup venv. Commit benchmarks/results, README.md and docs afterwards.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python}
PYTHON3=${PYTHON3:-python3}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

parts=()
dry=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --all) parts+=(quickstart setup benchmarks headline) ;;
        --quickstart | --setup | --benchmarks | --headline) parts+=("${1#--}") ;;
        --render) ;;
        --dry-run)
            [[ $# -ge 2 ]] || { echo "remeasure.sh: --dry-run needs a folder" >&2; exit 2; }
            dry=$(realpath -m "$2")
            shift
            ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "remeasure.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [[ -n $dry ]]; then
    RESULTS=$dry/results
    RUNS=$dry/runs
else
    RESULTS=$REPO/benchmarks/results
    RUNS=$REPO/outputs/remeasure
fi
mkdir -p "$RESULTS" "$RUNS"

stamp() {  # stamp FILE PROGRAM SCRIPT ARGS...: where and how, as a measurement starts
    "$PYTHON" - "$@" <<'PY'
import json, sys
from benchmarks.reporting import provenance
path, program, script, *argv = sys.argv[1:]
json.dump(provenance(f"{program} {script}", argv), open(path, "w"))
PY
}

quickstart() {
    local out=$RUNS/quickstart
    rm -rf "$out"
    local args=("output_dir=$out")
    [[ -n $dry ]] && args+=(trainer.epochs=1 trainer.limit_train_batches=2 probe.epochs=1
        "probe.milestones=[]")
    stamp "$RUNS/quickstart.stamp" python examples/train_digits_lt.py "${args[@]}"
    "$PYTHON" examples/train_digits_lt.py "${args[@]}"
    "$PYTHON" - "$RUNS/quickstart.stamp" "$out/metrics.json" "$RESULTS/quickstart_digits_lt.json" <<'PY'
import json, sys
from benchmarks.reporting import finish
stamp, metrics, dest = sys.argv[1:]
result = {"settings": finish(json.load(open(stamp))), "metrics": json.load(open(metrics))}
open(dest, "w").write(json.dumps(result, indent=2) + "\n")
PY
}

setup() {
    local work log steps
    work=$(mktemp -d)
    log=$RESULTS/setup_timing.log
    steps=$work/steps.tsv
    : >"$log"
    : >"$steps"
    stamp "$work/stamp" bash benchmarks/remeasure.sh --setup
    timed() {  # timed COMMAND: run it in the clone's venv, append "command, seconds, exit"
        local t0 t1 rc
        echo "\$ $1" >>"$log"
        t0=$(date +%s.%N)
        set +e
        (cd "$work/dscl-plugin" && env -u PYTHONPATH -u VIRTUAL_ENV \
            PATH="$work/dscl-plugin/.venv/bin:$PATH" bash -c "$1") >>"$log" 2>&1
        rc=$?
        set -e
        t1=$(date +%s.%N)
        printf '%s\t%s\t%s\n' "$1" "$(awk "BEGIN {print $t1 - $t0}")" "$rc" >>"$steps"
        echo "  $1: exit $rc, $(awk "BEGIN {printf \"%.0f\", $t1 - $t0}") s"
    }
    local head clone_t0
    head=$(git rev-parse HEAD)
    clone_t0=$(date +%s.%N)
    git clone -q --no-checkout "$REPO" "$work/dscl-plugin" >>"$log" 2>&1
    git -C "$work/dscl-plugin" checkout -q "$head" >>"$log" 2>&1
    printf 'git clone\t%s\t0\n' "$(awk "BEGIN {print $(date +%s.%N) - $clone_t0}")" >>"$steps"
    timed "$PYTHON3 -m venv .venv"
    timed "pip install -e ."
    local size size_test
    size=$(du -sb "$work/dscl-plugin/.venv" | cut -f1)
    if [[ -n $dry ]]; then
        timed "python examples/train_digits_lt.py trainer.epochs=1 trainer.limit_train_batches=2 probe.epochs=1 'probe.milestones=[]'"
    else
        timed "python examples/train_digits_lt.py"
    fi
    timed 'pip install -e ".[test]"'
    size_test=$(du -sb "$work/dscl-plugin/.venv" | cut -f1)
    timed "ruff check ."
    timed "ruff format --check ."
    timed "mypy"
    if [[ -n $dry ]]; then
        timed "pytest -q tests/test_checks.py"
    else
        timed "pytest -q"
    fi
    "$PYTHON" - "$work/stamp" "$steps" "$size" "$size_test" "$RESULTS/setup_timing.json" \
        "$work/dscl-plugin/.venv/bin/python" <<'PY'
import json, subprocess, sys
from benchmarks.reporting import finish
stamp, steps, size, size_test, dest, venv_python = sys.argv[1:]
rows = [line.split("\t") for line in open(steps).read().splitlines()]
result = {
    "settings": finish(json.load(open(stamp))),
    "python": subprocess.run([venv_python, "--version"], capture_output=True, text=True).stdout.strip(),
    "venv_size_gb": int(size) / 1e9,
    "venv_size_gb_with_test": int(size_test) / 1e9,
    "steps": [{"command": c, "seconds": round(float(s), 1), "exit_code": int(rc)} for c, s, rc in rows],
}
open(dest, "w").write(json.dumps(result, indent=2) + "\n")
PY
    rm -rf "$work"
}

benchmarks() {
    local quick=()
    [[ -n $dry ]] && quick=(--quick)
    "$PYTHON" -m benchmarks.train_step --device cpu --threads 1 "${quick[@]}" \
        --json "$RESULTS/train_step.json"
    "$PYTHON" -m benchmarks.train_step --device cpu --threads 1 --step-only "${quick[@]}" \
        --settings cnn5_28px --precisions fp32 bf16 bf16_cl --num-patches 2 \
        --queue-size 4096 --num-classes 10 --json "$RESULTS/train_step_cpu_precision_amx.json"
    "$PYTHON" -m benchmarks.loss_speed "${quick[@]}" --json "$RESULTS/loss_speed.json"
    local repeats=()
    [[ -n $dry ]] && repeats=(--repeats 2 --help-repeats 2)
    "$PYTHON" -m benchmarks.import_time "${repeats[@]}" --output "$RESULTS/import_time.json"
}

headline() {
    local out=$RUNS/headline
    local tiny=()
    [[ -n $dry ]] && tiny=(trainer.epochs=1 trainer.limit_train_batches=2 probe.epochs=1
        "probe.milestones=[]" monitor.every=0)
    "$PYTHON" -m dscl_plugin.cli compare --config dscl_fashion_mnist_lt \
        --methods supcon dscl dscl_pbsd --seeds 0 --out "$out" trainer.precision=32-true \
        trainer.progress_bar=false "${tiny[@]}"
    mkdir -p "$RESULTS/headline_reproduction"
    cp "$out/report.md" "$out/runs.jsonl" "$out/compare.png" "$RESULTS/headline_reproduction/"
    "$PYTHON" -m benchmarks.pbsd_diagnostics --config "$out/dscl_pbsd/seed0/config.yaml" \
        --checkpoint "$out/dscl_pbsd/seed0/checkpoints/last.ckpt" \
        --output "$RESULTS/pbsd_diagnostics_fashion_mnist_lt.json"
}

render() {
    local root=$REPO
    if [[ -n $dry ]]; then  # the pages and results of this checkout, overlaid with DIR/results
        root=$dry/site
        rm -rf "$root"
        mkdir -p "$root/benchmarks"
        cp -r README.md docs "$root/"
        cp -r benchmarks/results "$root/benchmarks/results"
        cp -r "$RESULTS/." "$root/benchmarks/results/"
        rm -f "$root/benchmarks/results/setup_timing.log"
    fi
    "$PYTHON" -m tools.render_docs --root "$root"
    "$PYTHON" -m tools.render_docs --check --root "$root"
}

for part in "${parts[@]}" render; do
    echo "== remeasure: $part (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    start=$SECONDS
    "$part"
    echo "== remeasure: $part took $((SECONDS - start)) s"
done
if [[ -n $dry ]]; then
    echo "dry run: results in $RESULTS, rendered pages in $dry/site (not measurements)"
else
    echo "now commit benchmarks/results, README.md and docs"
fi
