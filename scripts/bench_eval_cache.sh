#!/usr/bin/env bash
# Times `lincir eval` on CIRR val twice with a fresh feature cache: the first run embeds the
# gallery, the second reads it from the cache. The real annotation files of SHARED/benchmarks
# are used with generated placeholder images (640x480 PNGs: decoding and resizing are part of the
# first run's cost, as with real photos). Writes the times and their ratio to OUT (JSON).
#   scripts/bench_eval_cache.sh MODEL_DIR SHARED_DIR OUT.json [PYTHON]
set -euo pipefail
model=$1; shared=$2; out=$3; py=${4:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
mkdir -p "$work/CIRR"
ln -s "$shared/benchmarks/CIRR/cirr" "$work/CIRR/cirr"
"$py" - "$shared/benchmarks/CIRR/cirr/image_splits/split.rc2.val.json" "$work/CIRR" <<'PY'
import json, sys, zlib
from pathlib import Path
from PIL import Image
split, root = json.load(open(sys.argv[1])), Path(sys.argv[2])
for name, rel in split.items():
    h = zlib.crc32(name.encode())
    img = Image.new("RGB", (640, 480), (h & 255, (h >> 8) & 255, (h >> 16) & 255))
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    img.save(p)
PY
run() {
  local start end
  start=$(date +%s.%N)
  "$here/target/release/lincir" eval --model "$model" --baseline sum --dataset cirr --dataset-path "$work/CIRR" \
      --cache-dir "$work/cache" --batch-size 32 --json "$work/$1.json" > /dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
first=$(run first)
second=$(run second)
"$py" - "$first" "$second" "$out" "$model" <<'PY'
import json, sys, datetime
first, second = float(sys.argv[1]), float(sys.argv[2])
r = {"date": datetime.date.today().isoformat(), "model": sys.argv[4], "dataset": "CIRR val (4,181 queries, 2,297 placeholder images 640x480)",
     "first_run_s": first, "cached_run_s": second, "ratio": first / second}
json.dump(r, open(sys.argv[3], "w"), indent=2)
print(f"first run {first:.1f} s, cached run {second:.1f} s: {first / second:.1f}x")
PY
rm -rf "$work"
