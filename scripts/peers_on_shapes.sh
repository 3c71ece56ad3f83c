#!/usr/bin/env bash
# LinCIR, SEARLE and Pic2Word side by side on the shapes world, with the three baselines, in one
# `lincir eval` (docs/EVALUATION.md): trains a LinCIR phi (1,000 x 64, lr 1e-4, seed 0), derives
# SEARLE- and Pic2Word-format checkpoints from it (scripts/peer_checkpoints.py), evaluates all six
# twice (the second run must take the whole gallery from the feature cache), then LinCIR in bf16.
#   scripts/peers_on_shapes.sh SHARED_DIR OUT_DIR [PYTHON]
set -euo pipefail
shared=$1; out=$2; py=${3:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
lincir="$here/target/release/lincir"
model="$shared/shapes/clip"; bench="$shared/shapes/bench"
mkdir -p "$out"
export LINCIR_CACHE="$out/cache"
[ -f "$out/lincir/phi_latest.safetensors" ] || "$lincir" train --model "$model" --captions "$shared/shapes/captions.txt" \
  --output-dir "$out/lincir" --batch-size 64 --max-steps 1000 --lr 1e-4 --seed 0 > "$out/train.log"
[ -f "$out/gallery.safetensors" ] || "$lincir" embed --model "$model" --images "$bench/dev" --out "$out/gallery.safetensors" > /dev/null
"$py" "$here/scripts/peer_checkpoints.py" "$out/lincir/phi_latest.safetensors" "$out/gallery.safetensors" "$out/peers"
for pass in 1 2; do
  "$lincir" eval --model "$model" --dataset cirr --dataset-path "$bench" \
    --phi "lincir=$out/lincir/phi_latest.safetensors" --phi "searle=$out/peers/searle_phi.pt" --phi "pic2word=$out/peers/pic2word.pt" \
    --baseline image --baseline text --baseline sum --json "$out/compare-$pass.json" | tee "$out/compare-$pass.txt"
done
"$lincir" eval --model "$model" --dataset cirr --dataset-path "$bench" --dtype bf16 \
  --phi "lincir=$out/lincir/phi_latest.safetensors" --json "$out/lincir-bf16.json" | tee "$out/lincir-bf16.txt"
