#!/usr/bin/env bash
# Trains phi on the shapes world under several settings and evaluates each on the shapes
# CIRR-layout benchmark with `lincir eval`; also the three baselines. Writes one JSON per run
# under OUT and a Markdown table to OUT/table.md.
#   scripts/shapes_experiments.sh SHARED_DIR OUT_DIR [NAME=ARGS ...]
# Default runs: the official measurement's setting (1,000 steps, batch 64, lr 1e-4) and variations.
set -euo pipefail
shared=$1; out=$2; shift 2
here=$(cd "$(dirname "$0")/.." && pwd)
lincir="$here/target/release/lincir"
model="$shared/shapes/clip"; bench="$shared/shapes/bench"; captions="$shared/shapes/captions.txt"
mkdir -p "$out"
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then
  runs=(
    "paper-1000x64=--max-steps 1000 --batch-size 64"
    "seed1-1000x64=--max-steps 1000 --batch-size 64 --seed 1"
    "seed2-1000x64=--max-steps 1000 --batch-size 64 --seed 2"
    "no-noise-1000x64=--max-steps 1000 --batch-size 64 --no-noise"
    "l2norm-1000x64=--max-steps 1000 --batch-size 64 --l2-normalize"
    "no-dropout-1000x64=--max-steps 1000 --batch-size 64 --phi-dropout 0"
    "steps-250x64=--max-steps 250 --batch-size 64"
    "steps-3000x64=--max-steps 3000 --batch-size 64"
    "batch-1000x256=--max-steps 1000 --batch-size 256"
  )
fi
for b in image text sum; do
  [ -f "$out/baseline-$b.json" ] || "$lincir" eval --model "$model" --dataset cirr --dataset-path "$bench" --baseline "$b" --json "$out/baseline-$b.json" > /dev/null
done
for run in "${runs[@]}"; do
  name=${run%%=*}; args=${run#*=}
  [ -f "$out/$name.json" ] && continue
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$lincir" train --model "$model" --captions "$captions" --output-dir "$out/$name" --lr 1e-4 $args > "$out/$name.log"
  secs=$(( $(date +%s) - start ))
  "$lincir" eval --model "$model" --phi "$out/$name/phi_latest.safetensors" --dataset cirr --dataset-path "$bench" --json "$out/$name.eval.json" > /dev/null
  python3 - "$out/$name.eval.json" "$out/$name.json" "$secs" "$args" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r["train_seconds"] = int(sys.argv[3]); r["train_args"] = sys.argv[4]
json.dump(r, open(sys.argv[2], "w"), indent=1)
PY
done
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for f in sorted(os.listdir(out)):
    if f.endswith(".json") and not f.endswith(".eval.json"):
        r = json.load(open(os.path.join(out, f)))
        if "metrics" in r:  # lincir eval --json: {"metrics": {"all": {...}}}
            m = r["metrics"]["all"]
            r["recall"] = {k: v for k, v in m.items() if k.startswith("R@")}
            r["recall_subset"] = {k: v for k, v in m.items() if k.startswith("Rs@")}
        rows.append((f[:-5], r))
lines = ["| run | R@1 | R@5 | R@10 | R@50 | Rs@1 | Rs@2 | Rs@3 | train time |", "|---|---|---|---|---|---|---|---|---|"]
for name, r in rows:
    rec = r["recall"]; sub = r["recall_subset"]
    t = f'{r["train_seconds"]} s' if "train_seconds" in r else "-"
    lines.append(f'| {name} | {rec["R@1"]:.2f} | {rec["R@5"]:.2f} | {rec["R@10"]:.2f} | {rec["R@50"]:.2f} | '
                 f'{sub["Rs@1"]:.2f} | {sub["Rs@2"]:.2f} | {sub["Rs@3"]:.2f} | {t} |')
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
