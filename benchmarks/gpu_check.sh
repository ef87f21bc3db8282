#!/usr/bin/env bash
# The GPU paths in one short run (about 8 minutes on one GPU):
#   1. the device, torch and the driver;
#   2. the CUDA paths of the tests (tests/test_cuda.py: bench, adversarial probe, certifier, smoothing, the batched
#      targeted attacks, stacked tasks);
#   3. the default bench with --device cuda from an empty cache, timed, beside the same on the CPU's threads;
#   4. a one-GPU torchrun of a small bench;
#   5. the standard protocol's per-part timing table (benchmarks/protocol_parts.py) on the GPU, 200 test points;
#   6. the tasks of one encoder one at a time against stacked into one pass (benchmarks/stacked_cells.py), 17 tasks.
# Everything goes to the terminal and to $OUT/gpu_check.log when $OUT is set (the device tool's output folder).
#
# A GPU machine often has torch but not robrep's other dependencies, and no network. So, where pip reaches its
# registry (here):
#     bash benchmarks/gpu_check.sh --prepare     # wheels of the pure-Python dependencies into .whl/ (ignored)
# and on the GPU machine, from the repository root with .whl/ beside it:
#     bash benchmarks/gpu_check.sh
# which installs from .whl/ the ones python3 there cannot import (into a scratch folder, nothing system-wide),
# and runs robrep from this tree (no install needed). The wheels are the versions this machine has installed.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# robrep's dependencies that a machine with torch may lack (import name, distribution)
DEPS="torchattacks:torchattacks foolbox:foolbox eagerpy:eagerpy git:GitPython gitdb:gitdb smmap:smmap
mlxtend:mlxtend tomli_w:tomli_w"

if [ "${1:-}" = "--prepare" ]; then
    pins=""
    for d in $DEPS; do
        pin="$("$PY" -c "import importlib.metadata as m; print('${d#*:}==' + m.version('${d#*:}'))")" \
            || { echo "${d#*:} is not installed here: install robrep first (pip install -e .)"; exit 1; }
        pins="$pins $pin"
    done
    rm -rf .whl && mkdir .whl  # one version of each: two stop the install there
    # shellcheck disable=SC2086  # one argument per distribution==version
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation py --abi none \
        --platform any -d .whl $pins || exit 1
    ls -l .whl
    echo "now, on the GPU machine: bash benchmarks/gpu_check.sh (with .whl/ carried along)"
    exit 0
fi

LOG="${OUT:-/tmp}/gpu_check.log"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export GIT_PYTHON_REFRESH=quiet  # foolbox imports GitPython, which refuses to import where no git program is
exec > >(tee "$LOG") 2>&1
step() { echo; echo "== $1 ($(date +%T))"; }
timed() { local t0=$SECONDS; "$@"; local rc=$?; echo "-> rc $rc, $((SECONDS - t0)) s"; return 0; }

step "dependencies"
missing=""
for d in $DEPS; do "$PY" -c "import ${d%%:*}" 2>/dev/null || missing="$missing ${d#*:}"; done
if [ -n "$missing" ]; then
    echo "not importable here:$missing"
    wheels=""
    for dist in $missing; do  # the wheels of the missing ones only: the machine's own copies of the rest stay
        wheel="$(ls .whl/"$(echo "$dist" | tr 'A-Z-' 'a-z_')"-*.whl 2>/dev/null | head -1)"
        [ -n "$wheel" ] || { echo "no wheel of $dist in .whl/: run 'bash benchmarks/gpu_check.sh --prepare' where pip reaches its registry, and carry .whl/"; exit 1; }
        wheels="$wheels $wheel"
    done
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" $wheels || exit 1
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # robrep from this tree, installed or not

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
"$PY" -c "import torch, robrep; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''); print('robrep', robrep.__version__, robrep.__file__)" || { echo "robrep does not import here"; exit 1; }

step "the CUDA paths of the tests"
timed timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_cuda.py

step "the default bench on the GPU, from an empty cache"
timed env ROBREP_CACHE="$WORK/cache-gpu" timeout 180 "$PY" -m robrep bench --device cuda --out "$WORK/gpu"
step "the default bench on the CPU, from an empty cache (the same machine)"
timed env ROBREP_CACHE="$WORK/cache-cpu" timeout 300 "$PY" -m robrep bench --out "$WORK/cpu"
[ -f "$WORK/gpu/results.csv" ] && [ -f "$WORK/cpu/results.csv" ] && "$PY" - "$WORK" <<'PY'
import sys, pandas as pd
w = sys.argv[1]
cpu, gpu = (pd.read_csv(f"{w}/{d}/results.csv").sort_values(["learner", "radius"]) for d in ("cpu", "gpu"))
diff = (cpu["adversarial_accuracy"].to_numpy() - gpu["adversarial_accuracy"].to_numpy())
print(f"cells {len(cpu)}; largest |cpu - gpu| robust accuracy {abs(diff).max():.3f}")
PY

step "a one-GPU torchrun"
timed env ROBREP_CACHE="$WORK/cache-ddp" timeout 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m robrep bench --device cuda --learner vae --epochs 2 --n-examples 200 --out "$WORK/ddp"

step "where the standard protocol's time goes on the GPU (200 test points, the VAE)"
timed env ROBREP_CACHE="$WORK/cache-gpu" timeout 150 "$PY" benchmarks/protocol_parts.py --device cuda \
    --learners vae --n-examples 200 --json "${OUT:-$WORK}/protocol_parts_gpu.json"

step "17 tasks of one encoder, one at a time and stacked (robrep bench --stack-tasks), on the GPU"
timed env ROBREP_CACHE="$WORK/cache-gpu" timeout 150 "$PY" benchmarks/stacked_cells.py --device cuda --tasks 17 \
    --json "${OUT:-$WORK}/stacked_cells_gpu.json"

step "done"
