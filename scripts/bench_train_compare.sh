#!/usr/bin/env bash
# Training-step throughput of lincir and of the same step in PyTorch/transformers, one after the
# other in one run, same model, batch, captions and threads; writes both plus the ratios to OUT.
#   scripts/bench_train_compare.sh MODEL_DIR OUT.json [PYTHON] [BATCH] [STEPS]
set -euo pipefail
model=$1; out=$2; py=${3:-python3}; batch=${4:-16}; steps=${5:-6}
here=$(cd "$(dirname "$0")/.." && pwd)
threads=${RAYON_NUM_THREADS:-$(nproc)}
tmp=$(mktemp -d)
"$here/target/release/lincir" --threads "$threads" bench train --model "$model" --batch-size "$batch" --steps "$steps" --out "$tmp/lincir.json"
RAYON_NUM_THREADS=$threads "$py" "$here/scripts/bench_train_torch.py" "$model" --batch-size "$batch" --steps "$steps" > "$tmp/torch.json"
"$py" - "$tmp/lincir.json" "$tmp/torch.json" "$out" <<'PY'
import json, sys, datetime
l, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
r = {"date": datetime.date.today().isoformat(), "lincir": l, "torch": t,
     "ratio_vs_torch_padded_to_77": l["samples_per_s"] / t["samples_per_s_padded_to_77"],
     "ratio_vs_torch_padded_to_longest": l["samples_per_s"] / t["samples_per_s"]}
json.dump(r, open(sys.argv[3], "w"), indent=2)
print(f"{'training samples/s':34}{'lincir':>10}{'torch':>10}{'ratio':>8}")
print(f"{'vs torch padded to 77 (original)':34}{l['samples_per_s']:10.2f}{t['samples_per_s_padded_to_77']:10.2f}{r['ratio_vs_torch_padded_to_77']:8.2f}")
print(f"{'vs torch padded to longest':34}{l['samples_per_s']:10.2f}{t['samples_per_s']:10.2f}{r['ratio_vs_torch_padded_to_longest']:8.2f}")
PY
rm -rf "$tmp"
