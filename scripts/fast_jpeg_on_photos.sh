#!/usr/bin/env bash
# fast_jpeg_on_photos.sh - `--jpeg-decode fast` against `exact` on real photographs: how far the
# pixels move (scripts/fast_jpeg_quality.py) and how many photos/s `lincir embed` reads, for CLIPs
# of several sizes (docs/PERFORMANCE.md, "Fast JPEG decoding").
#
#   scripts/fast_jpeg_on_photos.sh OUT_DIR PYTHON MODEL...
#
# The photographs: the JPEG wallpapers of Debian 12's ukui-wallpapers and lomiri-wallpapers
# packages (24 photos and renders of 1.5 to 24 megapixels, CC BY and CC BY-SA; not part of this
# repository), fetched with `apt-get download`. LINCIR_BIN: the binary (default
# target/release/lincir). ROUNDS (default 3): alternated exact/fast rounds per model.
set -euo pipefail

out=${1:?usage: fast_jpeg_on_photos.sh OUT_DIR PYTHON MODEL...}
python=${2:?python with Pillow and numpy}
shift 2
bin=${LINCIR_BIN:-target/release/lincir}
rounds=${ROUNDS:-3}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

photos=$out/photos
if [ ! -d "$photos" ]; then
  (cd "$work" && apt-get download ukui-wallpapers=20.04.3-1.1 lomiri-wallpapers-16.04=20.04.0-2 lomiri-wallpapers-20.04=20.04.0-2 >/dev/null)
  mkdir -p "$photos"
  for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/x"
  done
  find "$work/x" -iname '*.jpg' -exec cp {} "$photos/" \;
fi
echo "$(ls "$photos" | wc -l) photos in $photos"

"$python" scripts/fast_jpeg_quality.py "$photos" "$out/quality.json"

# photos/s as `lincir embed` prints it: "embedded N images with M in Xs (R/s)".
rate() { sed -n 's/.*(\([0-9.]*\)\/s).*/\1/p' "$1"; }
echo '{"runs": [' > "$out/speed.json"
first=1
for model in "$@"; do
  for round in $(seq 1 "$rounds"); do
    for mode in exact fast; do
      log=$out/embed-$(basename "$model")-$mode-$round.txt
      "$bin" embed --model "$model" --images "$photos" --jpeg-decode "$mode" --out "$work/e.safetensors" > "$log" 2>&1
      r=$(rate "$log")
      echo "$(basename "$model") round $round $mode: $r photos/s"
      [ $first = 1 ] || echo ',' >> "$out/speed.json"
      first=0
      printf '{"model": "%s", "round": %d, "jpeg_decode": "%s", "photos_per_s": %s}' "$(basename "$model")" "$round" "$mode" "$r" >> "$out/speed.json"
    done
  done
done
printf '\n], "machine": "%s", "threads": %s}\n' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" >> "$out/speed.json"
