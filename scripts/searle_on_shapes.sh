#!/usr/bin/env bash
# LinCIR, Pic2Word and SEARLE trained by lincir on the shapes world, evaluated in one table on its
# CIRR-layout val split (docs/TRAINING.md, "SEARLE"). Per seed:
#   - LinCIR: `train` on captions.txt, 1,000 x 64 at lr 1e-4;
#   - Pic2Word: `train-pic2word` on unlabelled images, 1,000 x 64 at lr 1e-4;
#   - SEARLE: `train-searle` on the same images: a vocabulary of the world's concepts (shapes,
#     colours, coloured shapes, sized shapes, backgrounds: 100), phrases taken from captions.txt
#     (the captions naming each concept), textual inversion with SEARLE's settings (350 steps,
#     batches of 32), then phi 1,000 x 64 at lr 1e-4;
# each image-trained method on (a) the 512 gallery images (transductive: no caption or query is
# used, but the queries' own images are the training set) and (b) the 384 whose background is not
# cyan; and SEARLE-OTI, each reference image inverted at query time (`eval --searle-oti`). Each
# method is evaluated with its own query rule and image transform (--preprocess method).
#   [LINCIR_BIN=path/to/lincir] scripts/searle_on_shapes.sh SHARED_DIR OUT_DIR [SEEDS...]
set -euo pipefail
shared=$1; out=$2; shift 2
seeds=${*:-0 1 2}
here=$(cd "$(dirname "$0")/.." && pwd)
lincir="${LINCIR_BIN:-$here/target/release/lincir}"
model="$shared/shapes/clip"; bench="$shared/shapes/bench"
mkdir -p "$out/nocyan"
export LINCIR_CACHE="$out/cache"
for f in "$bench"/dev/*.png; do
  case "$f" in *cyan.png) ;; *) ln -sf "$(realpath "$f")" "$out/nocyan/" ;; esac
done
python3 "$here/scripts/shapes_vocabulary.py" "$out/vocabulary.txt"
for s in $seeds; do
  [ -f "$out/lincir-$s/phi_latest.safetensors" ] || "$lincir" train --model "$model" --captions "$shared/shapes/captions.txt" \
    --output-dir "$out/lincir-$s" --batch-size 64 --max-steps 1000 --lr 1e-4 --seed "$s" > "$out/lincir-$s.log"
  for set in gallery nocyan; do
    images="$bench/dev"; [ "$set" = nocyan ] && images="$out/nocyan"
    run="$out/pic2word-$set-$s"
    [ -f "$run/im2text_latest.safetensors" ] || "$lincir" train-pic2word --model "$model" --images "$images" \
      --output-dir "$run" --batch-size 64 --max-steps 1000 --lr 1e-4 --seed "$s" > "$run.log"
    run="$out/searle-$set-$s"
    [ -f "$run/searle_phi.pt" ] || "$lincir" train-searle --model "$model" --images "$images" --vocabulary "$out/vocabulary.txt" \
      --phrase-captions "$shared/shapes/captions.txt" --output-dir "$run" --batch-size 64 --max-steps 1000 --lr 1e-4 \
      --seed "$s" --resume > "$run.log"
    # SEARLE-OTI inverts the references themselves (no training set): once per seed, in the
    # gallery set's table.
    oti=(); [ "$set" = gallery ] && oti=(--searle-oti --oti-vocabulary "$out/vocabulary.txt" \
      --oti-phrase-captions "$shared/shapes/captions.txt" --oti-seed "$s")
    "$lincir" eval --model "$model" --dataset cirr --dataset-path "$bench" --preprocess method \
      --phi "lincir=$out/lincir-$s/phi_latest.safetensors" --phi "pic2word=$out/pic2word-$set-$s/im2text_latest.safetensors" \
      --phi "searle=$out/searle-$set-$s/searle_phi.pt" "${oti[@]}" --baseline sum --json "$out/eval-$set-$s.json" | tee "$out/eval-$set-$s.txt"
  done
done
