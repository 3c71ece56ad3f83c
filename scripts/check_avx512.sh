#!/usr/bin/env bash
# The AVX-512 kernels (clip/panel.rs: f32 in 16-lane registers, bf16 through vdpbf16ps) checked
# on an emulated Intel Sapphire Rapids, whatever CPU this runs on: lincir's unit tests and the
# CLIP and SMP parity suites, built as static binaries and run in Bochs
# (scripts/emulate_sapphire_rapids.sh). There, `Isa::supported()` is [Avx2, Avx512,
# Avx512Bf16]: the panel tests compare every kernel with f64 and with the AVX2 kernel, and the
# parity suites run through the widest kernel, as on a real Xeon or Zen 4.
#
# Usage: scripts/check_avx512.sh   (about 12 minutes on 2 cores the first time, mostly building
# the static test binaries and Bochs; about 2 minutes after that)
#
# Exit status: that of the first failing suite; 0 with a loud SKIPPED line when a pinned download
# of the emulator's inputs failed (Debian rotates kernels out of its pool: update the pin in
# emulate_sapphire_rapids.sh), so that a mirror's housekeeping does not fail CI.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
# A separate target directory (--target): static binaries do not disturb the usual build.
RUSTFLAGS='-C target-feature=+crt-static' cargo test --release -p lincir --lib --test clip_parity \
  --test smp_parity --no-run --target "$target" 2>&1 | tee "$build_log" | grep -E '^(error|warning: unused)' || true
mapfile -t binaries < <(sed -n 's/^ *Executable .*(\(.*\))$/\1/p' "$build_log")
[ "${#binaries[@]}" = 3 ] || { echo "check_avx512: expected 3 test binaries, found: ${binaries[*]:-none}" >&2; cat "$build_log" >&2; exit 1; }
for bin in "${binaries[@]}"; do
  echo "== $(basename "$bin") on an emulated Sapphire Rapids"
  set +e
  BOCHS_SR_TIMEOUT=${BOCHS_SR_TIMEOUT:-1800} BOCHS_SR_FILES="crates/lincir/tests/fixtures" \
    scripts/emulate_sapphire_rapids.sh "$bin" --test-threads 1 > >(grep -E '^(test |running|failures|thread|---- )|panicked|result|BOCHS-RUN-FLAGS|guest exit') 2>&1
  rc=$?
  set -e
  if [ "$rc" = 3 ]; then
    echo "check_avx512: SKIPPED: the emulator's pinned inputs could not be downloaded (see above)" >&2
    exit 0
  fi
  [ "$rc" = 0 ] || { echo "check_avx512: $(basename "$bin") failed on the emulated Sapphire Rapids (exit $rc)" >&2; exit "$rc"; }
done
echo "check_avx512: all suites passed with the AVX-512 and AVX512_BF16 kernels"
