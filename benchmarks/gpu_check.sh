#!/usr/bin/env bash
# The GPU paths in one short run (about 8 minutes on one GPU), for a machine that has robrep's dependencies
# installed (pip install -e ".[test]"):
#   1. the device, torch and the driver;
#   2. the CUDA paths of the tests (tests/test_cuda.py: bench, adversarial probe, certifier, smoothing, the batched
#      targeted attacks, stacked tasks);
#   3. the default bench with --device cuda from an empty cache, timed, beside the same on the CPU's threads;
#   4. a one-GPU torchrun of a small bench;
#   5. the standard protocol's per-part timing table (benchmarks/protocol_parts.py) on the GPU, 200 test points;
#   6. the tasks of one encoder one at a time against stacked into one pass (benchmarks/stacked_cells.py), 17 tasks;
# Everything goes to the terminal and to $OUT/gpu_check.log when $OUT is set (the device tool's output folder).
#     bash benchmarks/gpu_check.sh
set -u
LOG="${OUT:-/tmp}/gpu_check.log"
WORK="$(mktemp -d)"
exec > >(tee "$LOG") 2>&1
step() { echo; echo "== $1 ($(date +%T))"; }
timed() { local t0=$SECONDS; "$@"; local rc=$?; echo "-> rc $rc, $((SECONDS - t0)) s"; return 0; }

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
python -c "import torch, robrep; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''); print('robrep', robrep.__version__)" || { echo "robrep is not installed here"; exit 1; }

step "the CUDA paths of the tests"
timed timeout 240 python -m pytest -q -x tests/test_cuda.py

step "the default bench on the GPU, from an empty cache"
timed env ROBREP_CACHE="$WORK/cache-gpu" timeout 180 robrep bench --device cuda --out "$WORK/gpu"
step "the default bench on the CPU, from an empty cache (the same machine)"
timed env ROBREP_CACHE="$WORK/cache-cpu" timeout 300 robrep bench --out "$WORK/cpu"
python - "$WORK" <<'PY'
import sys, pandas as pd
w = sys.argv[1]
cpu, gpu = (pd.read_csv(f"{w}/{d}/results.csv").sort_values(["learner", "radius"]) for d in ("cpu", "gpu"))
diff = (cpu["adversarial_accuracy"].to_numpy() - gpu["adversarial_accuracy"].to_numpy())
print(f"cells {len(cpu)}; largest |cpu - gpu| robust accuracy {abs(diff).max():.3f}")
PY

step "a one-GPU torchrun"
timed env ROBREP_CACHE="$WORK/cache-ddp" timeout 150 torchrun --standalone --nproc_per_node=1 -m robrep bench \
    --device cuda --learner vae --epochs 2 --n-examples 200 --out "$WORK/ddp"

step "where the standard protocol's time goes on the GPU (200 test points, the VAE)"
timed env ROBREP_CACHE="$WORK/cache-gpu" timeout 150 python benchmarks/protocol_parts.py --device cuda \
    --learners vae --n-examples 200 --json "${OUT:-$WORK}/protocol_parts_gpu.json"

step "17 tasks of one encoder, one at a time and stacked (robrep bench --stack-tasks), on the GPU"
timed env ROBREP_CACHE="$WORK/cache-gpu" timeout 150 python benchmarks/stacked_cells.py --device cuda --tasks 17 \
    --json "${OUT:-$WORK}/stacked_cells_gpu.json"

step "done"
rm -rf "$WORK"
