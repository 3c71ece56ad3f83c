#!/usr/bin/env bash
# lincir on Windows (x86_64), checked from a Linux machine: cross-compiled for the GNU target with
# Debian's MinGW-w64 (for the C libraries: libjpeg, zstd, ...), run under Wine.
#
#   scripts/check_windows.sh check   # compiles everything for Windows, warnings as errors (CI)
#   scripts/check_windows.sh test    # the library's and the CLI's test suites under Wine, the
#                                    # shared one included, then the shapes world trained,
#                                    # evaluated, indexed and searched with Windows paths, against
#                                    # the native run (../shared or $LINCIR_SHARED; about 25 minutes;
#                                    # SUITES=0: the end-to-end part only)
#
# The Windows binary runs the same x86 kernels as on Linux (AVX2 / AVX-512 chosen at run time), so
# the shapes world must agree with the native run exactly. Wine is not Windows: what it leaves
# unchecked (the MSVC target, real NTFS sharing rules) is in docs/PORTABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-check}
TARGET=x86_64-pc-windows-gnu
need=(gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64)
[ "$MODE" = test ] && need+=(wine64)
. scripts/cross_setup.sh
cross_setup "$MODE" "$TARGET" Windows "${need[@]}"

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc CXX_x86_64_pc_windows_gnu=x86_64-w64-mingw32-g++
export AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar

if [ "$MODE" = check ]; then
  # Warnings are errors here: code for Unix only must be cfg-gated, not merely compile.
  RUSTFLAGS="-D warnings" cargo check --release --target "$TARGET" -p lincir -p lincir-cli --all-targets
  echo "windows: compiles"
  exit 0
fi

WINE=$(command -v wine64 || echo /usr/lib/wine/wine64)
export WINEPREFIX="$PWD/target/wine-prefix" WINEDEBUG=-all
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$WINE"
# Rust's standard library imports ProcessPrng from bcryptprimitives.dll, which Wine has only since
# version 9 (Debian 12 ships 8): a stand-in over RtlGenRandom, in this Wine prefix only.
if [ ! -f "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll" ]; then
  "$WINE" wineboot -i >/dev/null 2>&1 || true
  stub=$(mktemp -d)
  cat > "$stub/bcp.c" <<'CEOF'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID, ULONG);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len) {
    ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
    if (!SystemFunction036(data, n)) return FALSE;
    data += n; len -= n;
  }
  return TRUE;
}
CEOF
  x86_64-w64-mingw32-gcc -shared -O2 -o "$stub/bcryptprimitives.dll" "$stub/bcp.c" -ladvapi32
  cp "$stub/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
  rm -rf "$stub"
fi

# Windows paths: Wine shows the Linux file system as drive Z:, with backslashes.
winpath() { echo "Z:${1//\//\\}"; }
SHARED=$(realpath "${LINCIR_SHARED:-../shared}")
SHAPES="$SHARED/shapes"
# Both suites, the shared one included (all but the run-time BLAS test, which needs a BLAS DLL);
# SUITES=0 goes straight to the end-to-end comparison.
[ "${SUITES:-1}" = 0 ] || LINCIR_SHARED=$(winpath "$SHARED") cargo test --release --target "$TARGET" -p lincir -p lincir-cli -- --include-ignored --skip blas_products_match_the_builtin_kernel
cargo build --release --target "$TARGET" -p lincir-cli
cargo build --release -p lincir-cli
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/photos/trip/day 1" "$W/photos/home"
# (Arrays, not `ls | head`: under pipefail, ls killed by head's early exit would stop the script.)
shopt -s nullglob
dev=("$SHAPES"/bench/dev/*)
cp "${dev[@]:0:20}" "$W/photos/home/"
cp "${dev[@]:20:20}" "$W/photos/trip/day 1/"
query=$(basename "${dev[0]}")
for os in linux windows; do
  if [ $os = linux ]; then
    run=(target/release/lincir); p() { echo "$1"; }
  else
    run=("$WINE" "target/$TARGET/release/lincir.exe"); p() { winpath "$1"; }
  fi
  "${run[@]}" train --model "$(p "$SHAPES/clip")" --captions "$(p "$SHAPES/captions.txt")" --output-dir "$(p "$W/$os")" --batch-size 32 --max-steps 50 --seed 0
  "${run[@]}" eval --model "$(p "$SHAPES/clip")" --phi "$(p "$W/$os/phi_latest.safetensors")" --dataset cirr --dataset-path "$(p "$SHAPES/bench")" --no-cache --json "$(p "$W/$os-eval.json")"
  "${run[@]}" index --model "$(p "$SHAPES/clip")" --images "$(p "$W/photos")" --out "$(p "$W/$os-index")" --json "$(p "$W/$os-index.json")"
  "${run[@]}" search --index "$(p "$W/$os-index")" --phi "$(p "$W/$os/phi_latest.safetensors")" --image "$(p "$W/photos/home/$query")" --text "is a red square" -k 5 --folder "$(if [ $os = windows ]; then echo 'trip\day 1'; else echo 'trip/day 1'; fi)" --json > "$W/$os-search.json"
done
python3 - "$W" <<'PYEOF'
import json, sys
w = sys.argv[1]
def load(os):
    loss = json.loads(open(f"{w}/{os}/metrics.jsonl").read().splitlines()[-1])["loss"]
    r1 = json.load(open(f"{w}/{os}-eval.json"))["metrics"]["all"]["R@1"]
    index = json.load(open(f"{w}/{os}-index/index.json"))
    hits = [(h["path"], round(h["score"], 6)) for h in json.load(open(f"{w}/{os}-search.json"))["hits"]]
    return loss, r1, index, hits
(l_loss, l_r1, l_index, l_hits), (w_loss, w_r1, w_index, w_hits) = load("linux"), load("windows")
print(f"loss at step 50: linux {l_loss:.7f}, windows {w_loss:.7f}; R@1: linux {l_r1}, windows {w_r1}")
print(f"index root on windows: {w_index['root']}; top hit: {w_hits[0]}")
problems = []
if l_loss != w_loss or l_r1 != w_r1:
    problems.append("training or evaluation differs")
if [e["path"] for e in l_index["entries"]] != [e["path"] for e in w_index["entries"]]:
    problems.append("the indexes' entries differ (paths are stored with /, whatever the system)")
if w_index["root"].startswith("\\\\?\\") or not w_index["root"].startswith("Z:\\"):
    problems.append(f"the index's folder is not a plain Windows path: {w_index['root']}")
if l_hits != w_hits or not all(p.startswith("trip/day 1/") for p, _ in w_hits):
    problems.append(f"searches differ: {l_hits} vs {w_hits}")
for p in problems:
    print("windows:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PYEOF
echo "windows: $([ "${SUITES:-1}" = 0 ] || echo "the test suites pass under Wine, and ")the shapes world agrees with the native run"
