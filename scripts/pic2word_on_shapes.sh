#!/usr/bin/env bash
# LinCIR (trained on the shapes captions) against Pic2Word (trained by `lincir train-pic2word` on
# unlabelled shapes images) on the shapes world's CIRR-layout val split (docs/TRAINING.md,
# "Pic2Word"). Per seed: LinCIR 1,000 x 64 at lr 1e-4; Pic2Word 1,000 x 64 at lr 1e-4 on
#   - all 512 gallery images (transductive: the images the queries are ranked among, without
#     any caption or query), and
#   - the 384 images whose background is not cyan (the cyan quarter held out of training);
# each without and with Pic2Word's augmentation (`--augment`: a random crop of 90-100% of each
# image, embedded again at every step); then one `lincir eval` per training set with the
# image+text baseline.
#   scripts/pic2word_on_shapes.sh SHARED_DIR OUT_DIR [SEEDS...]
set -euo pipefail
shared=$1; out=$2; shift 2
seeds=${*:-0 1 2}
here=$(cd "$(dirname "$0")/.." && pwd)
lincir="$here/target/release/lincir"
model="$shared/shapes/clip"; bench="$shared/shapes/bench"
mkdir -p "$out/nocyan"
export LINCIR_CACHE="$out/cache"
for f in "$bench"/dev/*.png; do
  case "$f" in *cyan.png) ;; *) ln -sf "$(realpath "$f")" "$out/nocyan/" ;; esac
done
for s in $seeds; do
  [ -f "$out/lincir-$s/phi_latest.safetensors" ] || "$lincir" train --model "$model" --captions "$shared/shapes/captions.txt" \
    --output-dir "$out/lincir-$s" --batch-size 64 --max-steps 1000 --lr 1e-4 --seed "$s" > "$out/lincir-$s.log"
  for set in gallery nocyan; do
    images="$bench/dev"; [ "$set" = nocyan ] && images="$out/nocyan"
    for aug in "" -aug; do
      run="$out/pic2word-$set$aug-$s"
      [ -f "$run/im2text_latest.safetensors" ] || "$lincir" train-pic2word --model "$model" --images "$images" \
        --output-dir "$run" --batch-size 64 --max-steps 1000 --lr 1e-4 --seed "$s" ${aug:+--augment} > "$run.log"
    done
  done
  for set in gallery gallery-aug nocyan nocyan-aug; do
    "$lincir" eval --model "$model" --dataset cirr --dataset-path "$bench" --preprocess method \
      --phi "lincir=$out/lincir-$s/phi_latest.safetensors" --phi "pic2word=$out/pic2word-$set-$s/im2text_latest.safetensors" \
      --baseline sum --json "$out/eval-$set-$s.json" | tee "$out/eval-$set-$s.txt"
  done
done
