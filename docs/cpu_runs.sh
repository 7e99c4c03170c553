#!/usr/bin/env bash
# The 20-minute CPU recipes of every family on ../shared/data (BSDS500 + T91 train, Set5 + Set14 val),
# each evaluated against its baselines. Reproduces the table of docs/cpu_runs.md:
#     bash docs/cpu_runs.sh [FAMILY...]        (default: every family; STEPS=N overrides steps)
# Writes .raygan/cpu_runs/<run>/{summary.json,eval/table.md}. Needs ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-}
ONLY=("$@")
PY=.venv/bin/python
OUT=.raygan/cpu_runs
DATA=../shared/data
mkdir -p "$OUT"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true

[ -f .raygan/shared_shards/manifest.json ] || \
  $PY jobs/make_shards.py --src $DATA/train --val-src $DATA/val --dst .raygan/shared_shards --no-progress
[ -f .raygan/face_shards/manifest.json ] || \
  $PY jobs/make_face_shards.py --synthetic 64 --dst .raygan/face_shards

run() {  # name config evaluate-args...
  local name=$1 config=$2; shift 2
  if [ ${#ONLY[@]} -gt 0 ] && [[ ! " ${ONLY[*]} " =~ " $name " ]]; then return; fi
  local steps=()
  [ -n "$STEPS" ] && steps=(--steps "$STEPS")
  [ -f "$OUT/$name/summary.json" ] || \
  $PY jobs/train_$(basename "$config" | cut -d_ -f1).py --config "$config" --data "$DATA_URI" \
      "${steps[@]}" --name "cpu-$name-$(date +%s)" --summary-json "$OUT/$name/summary.json" \
      data.val_max_images=4 > "$OUT/$name/train.log" 2>&1
  local ckpt
  ckpt=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$OUT/$name/summary.json")
  $PY jobs/evaluate.py --model "$ckpt" "$@" --out "$OUT/$name/eval" --no-progress \
      --experiment raygan-cpu-runs > "$OUT/$name/eval.log" 2>&1
  cat "$OUT/$name/eval/table.md"
}

SETS=(--sets $DATA/val/set5 $DATA/val/set14)
DATA_URI=.raygan/shared_shards
mkdir -p $OUT/{wcdgan,dagan,dequantizer,dequantizer_q50,pan_sr,facesr}
run wcdgan models/configs/wcdgan_cpu_20min.yaml input "${SETS[@]}"
# whole images, as the papers score them; DAGAN through tiles (its eval_tile, recorded in the table header)
run dagan models/configs/dagan_cpu_20min.yaml zp mig br "${SETS[@]}"
# DequantizerNet's own protocol resizes a centred square to 96 px (its paper's); whole photos here
run dequantizer models/configs/dequantizer_cpu_20min.yaml input --protocol rgb "${SETS[@]}"
run dequantizer_q50 models/configs/dequantizer_q50_cpu_20min.yaml input --protocol rgb "${SETS[@]}"
run pan_sr models/configs/pan_sr_cpu_20min.yaml bicubic "${SETS[@]}"
DATA_URI=.raygan/face_shards
run facesr models/configs/facesr_gan_cpu_20min.yaml bicubic --sets .raygan/face_shards
