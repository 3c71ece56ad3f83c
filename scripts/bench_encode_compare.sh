#!/usr/bin/env bash
# Runs lincir's and transformers' encoding benchmarks on the same model, batch and threads, one
# after the other in one run, and writes both plus the ratios to OUT (JSON).
#   scripts/bench_encode_compare.sh MODEL_DIR OUT.json [PYTHON]
set -euo pipefail
model=$1; out=$2; py=${3:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
threads=${RAYON_NUM_THREADS:-$(nproc)}
tmp=$(mktemp -d)
"$here/target/release/lincir" --threads "$threads" bench encode --model "$model" --out "$tmp/lincir.json"
RAYON_NUM_THREADS=$threads "$py" "$here/scripts/bench_encode_torch.py" "$model" > "$tmp/torch.json"
"$py" - "$tmp/lincir.json" "$tmp/torch.json" "$out" <<'PY'
import json, sys, datetime
l, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
r = {"date": datetime.date.today().isoformat(), "lincir": l, "torch": t,
     "ratio_texts": l["texts_per_s"] / t["texts_per_s"],
     "ratio_texts_vs_torch_padded_to_77": l["texts_per_s"] / t["texts_per_s_padded_to_77"]}
if l.get("images_per_s") and t.get("images_per_s"):
    r["ratio_images"] = l["images_per_s"] / t["images_per_s"]
json.dump(r, open(sys.argv[3], "w"), indent=2)
print(f"{'':28}{'lincir':>10}{'torch':>10}{'ratio':>8}")
print(f"{'texts/s (pad longest)':28}{l['texts_per_s']:10.1f}{t['texts_per_s']:10.1f}{r['ratio_texts']:8.2f}")
print(f"{'texts/s vs torch pad 77':28}{l['texts_per_s']:10.1f}{t['texts_per_s_padded_to_77']:10.1f}{r['ratio_texts_vs_torch_padded_to_77']:8.2f}")
if "ratio_images" in r:
    print(f"{'images/s':28}{l['images_per_s']:10.2f}{t['images_per_s']:10.2f}{r['ratio_images']:8.2f}")
PY
rm -rf "$tmp"
