#!/usr/bin/env bash
# All of ms_rcnn's GPU checks in one command, for a short lease of a GPU machine.
#
#   0. environment: python, torch, CUDA, nvcc, compilers, cores, GPU (imports nothing of ours,
#      so it also explains a set-up that fails);
#   1. setup: only where mmdet or mmcv's ops are missing, install the wheels in $WHEELS into
#      $SITE (no index needed) and build mmcv's CUDA ops there (tools/build_mmcv.sh), or
#      unpack such a build saved by an earlier run; then run mmcv's roi_align and nms on
#      $DEVICE;
#   2. cuda_tests: the MaskIoU head never makes the host wait for the GPU; the sync counters;
#   3. targets, inference, train_step: the issue's three benchmarks on CUDA, as JSON;
#   4. amp_training: a short mixed-precision training run on synthetic data (train.py --amp);
#   5. head: the MaskIoU head alone.
# With no step named, all run, in that order (most needed first). Each step has its own time
# limit, cut to what is left before DEADLINE; a step that fails or runs out of time is recorded
# and the next one still runs; one that no longer fits is recorded as SKIPPED. The exit status
# is that of the first failed or skipped step. Everything goes to $OUT: log.txt (all output,
# appended), summary.txt (one line per step: status, seconds), targets.json, inference.json,
# train_step.json, head.json, amp_train.log, and after a build
# mmcv-built-<python>-<torch>[-ops_<CUDA_OPS>].tar.gz (the stripped build, a few MB: copied into
# $WHEELS, a later run unpacks it in seconds).
#
# The lent GPU machines (Python 3.12, a CUDA torch and nvcc, no package index) allow 10 minutes
# per command, stay warm only 30 s after one, and a session gets 15 minutes of device time in
# all, machine starts included. So everything runs in ONE call; first, here:
#   bash tools/fetch_offline_wheels.sh       # -> .whl/ (about 8 MB; git ignores it)
# then there, with .whl carried along and a 600-s limit (DEADLINE defaults to 570 s):
#   bash tools/gpu_checks.sh
# and hand the machine back at once.
# Environment: OUT (default work_dirs/gpu_checks), WHEELS (default .whl), SITE (default
# /tmp/ms_rcnn_site), PYTHON (default python3), DEVICE (default cuda; `cpu` rehearses the
# script with tiny sizes), AMP_ITERS (default 300; 32 with DEVICE=cpu), DEADLINE (seconds
# after the start by which every step must end, default 570), SETUP_LIMIT (seconds, default
# 360, for 16 cores; building the CPU ops on 2 cores takes about 400), CUDA_OPS (the mmcv ops
# whose CUDA kernels are built, default "nms roi_align", what MS R-CNN runs: all 58 kernels
# take about an hour of CPU time, one of them 5 minutes alone; empty: all of them).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-work_dirs/gpu_checks}"
WHEELS="${WHEELS:-.whl}"
SITE="${SITE:-/tmp/ms_rcnn_site}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = cpu ]; then AMP_ITERS="${AMP_ITERS:-32}"; else AMP_ITERS="${AMP_ITERS:-300}"; fi
DEADLINE="${DEADLINE:-570}"
# CUDA kernels of these mmcv ops only (all that MS R-CNN runs); set it empty for all of them.
CUDA_OPS="${CUDA_OPS-nms roi_align}"
START_TS=$(date +%s)
ALL=(cuda_tests targets inference train_step amp_training head)
STEPS=("$@")
[ "${#STEPS[@]}" -eq 0 ] && STEPS=("${ALL[@]}")
for name in "${STEPS[@]}"; do
  case " setup ${ALL[*]} " in
    *" $name "*) ;;
    *) echo "unknown step '$name' (steps: setup ${ALL[*]})" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
exec > >(tee -a "$OUT/log.txt") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
touch "$OUT/summary.txt"
FIRST_FAILURE=0

# step NAME SECONDS COMMAND...: run with a time limit (cut to what is left before DEADLINE),
# record status and duration.
step() {
  local name="$1" limit="$2" start rc left
  shift 2
  left=$(( DEADLINE - ($(date +%s) - START_TS) ))
  if [ "$left" -lt 15 ]; then
    printf '%-14s %-14s %5ss\n' "$name" "SKIPPED" 0 | tee -a "$OUT/summary.txt"
    echo "$name: skipped, ${left}s left before the deadline"
    [ "$FIRST_FAILURE" -eq 0 ] && FIRST_FAILURE=124
    return 124
  fi
  [ "$left" -lt "$limit" ] && limit="$left"
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  start=$(date +%s)
  if declare -F "$1" >/dev/null; then  # a function of this script: run it in a child bash
    timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@"
  else
    timeout --kill-after=10 "$limit" "$@"
  fi
  rc=$?
  local took=$(( $(date +%s) - start ))
  local status=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="TIMEOUT"; elif [ "$rc" -ne 0 ]; then status="FAILED rc=$rc"; fi
  printf '%-14s %-14s %5ss\n' "$name" "$status" "$took" | tee -a "$OUT/summary.txt"
  if [ "$rc" -ne 0 ] && [ "$FIRST_FAILURE" -eq 0 ]; then FIRST_FAILURE=$rc; fi
  return "$rc"
}

# End the script: print the summary and let tee write the last lines first.
finish() {
  echo "=== summary"
  cat "$OUT/summary.txt"
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null
  exit "$FIRST_FAILURE"
}

# A tag naming the interpreter and torch that a built mmcv belongs to (letters, digits, . _ -).
built_tag() {
  "$PYTHON" -c "import sys, torch; print('py%d%d-torch%s' % (sys.version_info[:2] + (torch.__version__,)))" | tr -c 'A-Za-z0-9._\n-' '_'
}

# The ops must run on the device they will be used on, not only import.
check_mmcv_ops() {
  "$PYTHON" - <<EOF
import torch, mmcv
from mmcv.ops import nms, roi_align
device = torch.device('$DEVICE')
feats = torch.arange(64.0, device=device).reshape(1, 1, 8, 8)
rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]], device=device)
out = roi_align(feats, rois, (2, 2), 1.0, 0, 'avg', True)
boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.1]], device=device)
keep = nms(boxes, torch.tensor([0.9, 0.8], device=device), 0.5)[1]
assert out.shape == (1, 1, 2, 2) and keep.tolist() == [0], (out, keep)
print('mmcv', mmcv.__version__, 'ops run on', device)
EOF
}

setup() {
  if "$PYTHON" -c "import mmdet, mmcv.ops" 2>/dev/null; then
    echo "mmdet and mmcv's ops import: nothing to install"
    check_mmcv_ops
    return
  fi
  [ -f "$WHEELS/mmcv-2.1.0.tar.gz" ] || { echo "no $WHEELS/mmcv-2.1.0.tar.gz: run tools/fetch_offline_wheels.sh first"; return 2; }
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --upgrade --target "$SITE" "$WHEELS"/*.whl || return 1
  "$PYTHON" -c "import importlib.util as u, mmengine, pycocotools, shapely, terminaltables; assert u.find_spec('mmdet')" \
    || { echo "a wheel is missing from $WHEELS: run tools/fetch_offline_wheels.sh again"; return 1; }
  local tag built
  tag="$(built_tag)"
  # A build with the CUDA kernels of some ops only is named after them (sorted).
  if [ "$DEVICE" != cpu ] && [ -n "${CUDA_OPS// /}" ]; then
    tag="$tag-ops_$(printf '%s\n' $CUDA_OPS | sort | paste -sd_)"
  fi
  built="$WHEELS/mmcv-built-$tag.tar.gz"
  if [ -f "$built" ]; then
    echo "unpacking $built (built by an earlier run)"
    tar xzf "$built" -C "$SITE" || return 1
  else
    BUILD_VERBOSE=1 PIP_INSTALL_ARGS="--no-index --no-deps --upgrade --target $SITE" \
      CUDA_OPS="$CUDA_OPS" bash tools/build_mmcv.sh "$PYTHON" "$WHEELS/mmcv-2.1.0.tar.gz" \
      || return 1
    # Keep the build for a later call on a fresh machine (carry it back in $WHEELS).
    command -v strip >/dev/null && strip --strip-debug "$SITE"/mmcv/_ext*.so
    (cd "$SITE" && tar czf "$OUT/mmcv-built-$tag.tar.gz" mmcv mmcv-*.dist-info) \
      && echo "saved $OUT/mmcv-built-$tag.tar.gz ($(du -h "$OUT/mmcv-built-$tag.tar.gz" | cut -f1)): copy it into $WHEELS to skip the build next time"
  fi
  check_mmcv_ops
}

environment() {
  # Nothing of mmcv or ours is imported: this also runs, and explains, where set-up fails.
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PYTHON" - <<'EOF'
import importlib.metadata as md, os, platform, sys, sysconfig
import torch
print('python', platform.python_version(), sys.executable, 'Python.h:',
      os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))
print('torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')
for name in ('mmcv', 'mmdet', 'mmengine', 'torchvision', 'numpy'):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, 'not installed')
print('cores', os.cpu_count())
EOF
  local rc=$?
  command -v nvcc >/dev/null && nvcc --version | grep release || echo "nvcc: not found"
  for tool in gcc ninja; do
    printf '%s: ' "$tool"
    if command -v "$tool" >/dev/null; then "$tool" --version 2>&1 | head -n 1; else echo "not found"; fi
  done
  return "$rc"
}

amp_training() {
  local tmp data work
  tmp="$(mktemp -d)"
  data="$tmp/data" work="$tmp/work_dir"
  "$PYTHON" -c "from ms_rcnn.testing import make_toy_coco; make_toy_coco('$data', num_images=32, size=(256, 320))" || return 1
  # 32 images, 2 per batch: 16 iterations per epoch.
  local epochs=$(( (AMP_ITERS + 15) / 16 ))
  local amp=(--amp)
  [ "$DEVICE" = cpu ] && amp=()  # mmengine's AMP wrapper needs CUDA; the rehearsal skips it
  "$PYTHON" tools/train.py tests/data/toy_ms-rcnn.py --data-root "$data" --work-dir "$work" \
    "${amp[@]}" --cfg-options train_cfg.max_epochs="$epochs" train_cfg.val_interval="$epochs" \
    default_hooks.logger.interval=20 default_hooks.checkpoint.interval="$epochs" \
    > "$OUT/amp_train.log" 2>&1
  local rc=$?
  grep -E "loss_mask_iou|Epoch\(val\)|Error|nan" "$OUT/amp_train.log" | tail -5
  if [ "$rc" -eq 0 ] && [ "${#amp[@]}" -gt 0 ] && ! grep -q "AmpOptimWrapper" "$OUT/amp_train.log"; then
    echo "--amp was given but the run's config has no AmpOptimWrapper"
    rc=1
  fi
  rm -rf "$tmp"
  return "$rc"
}

export -f built_tag check_mmcv_ops setup environment amp_training
export ROOT OUT WHEELS SITE PYTHON DEVICE AMP_ITERS CUDA_OPS

if [ "$DEVICE" = cpu ]; then
  SMALL=(--small --repeats 1 --warmup 0)
  REPEATS_TARGETS=(); REPEATS_INFERENCE=(); REPEATS_TRAIN=(); REPEATS_HEAD=()
else
  # Sized by the H200 run of 2026-11-28 (docs/benchmarks.md): targets with 10 repeats took
  # about 65 s (20 repeats and the scaling table did not end in 90 s); inference with 5 repeats
  # 57 s, too few to resolve its end-to-end overheads, hence 10.
  SMALL=(); REPEATS_TARGETS=(--repeats 10 --no-scaling); REPEATS_INFERENCE=(--repeats 10)
  REPEATS_TRAIN=(--repeats 5); REPEATS_HEAD=(--repeats 20)
fi
BENCH=tools/benchmark

step environment 30 environment
# Only set-up's own failure stops the run (the environment step is a diagnosis).
if ! step setup "${SETUP_LIMIT:-360}" setup; then
  echo "set-up failed or was skipped: nothing else can run"
  finish
fi
for name in "${STEPS[@]}"; do
  case "$name" in
    setup) ;;
    cuda_tests)
      step cuda_tests 90 "$PYTHON" -m pytest -q -rs -p no:cacheprovider -o addopts="" \
        tests/test_no_host_sync.py tests/test_benchmarks.py::test_count_host_syncs ;;
    targets)
      step targets 120 "$PYTHON" $BENCH/bench_mask_iou_targets.py --device "$DEVICE" \
        "${REPEATS_TARGETS[@]}" "${SMALL[@]}" --json "$OUT/targets.json" ;;
    inference)
      step inference 180 "$PYTHON" $BENCH/bench_inference.py --device "$DEVICE" \
        "${REPEATS_INFERENCE[@]}" "${SMALL[@]}" --json "$OUT/inference.json" ;;
    train_step)
      step train_step 150 "$PYTHON" $BENCH/bench_train_step.py --device "$DEVICE" \
        "${REPEATS_TRAIN[@]}" "${SMALL[@]}" --json "$OUT/train_step.json" ;;
    amp_training) step amp_training 180 amp_training ;;
    head)
      step head 60 "$PYTHON" $BENCH/bench_mask_iou_head.py --device "$DEVICE" \
        "${REPEATS_HEAD[@]}" "${SMALL[@]}" --json "$OUT/head.json" ;;
  esac
done
finish
