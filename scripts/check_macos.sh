#!/usr/bin/env bash
# lincir on macOS (Apple silicon and Intel), compiled from a Linux machine: Rust's standard library
# for the Apple targets from rustup, and Zig (from PyPI, `ziglang`, through `cargo-zigbuild`) as
# the C compiler for the C libraries (libjpeg, zstd, ...), since Zig carries macOS's libc headers
# and no Apple SDK is needed for that.
#
#   scripts/check_macos.sh           # cargo check, every target of both crates, warnings as errors
#
# This says that the code compiles for macOS (Unix-but-not-Linux code paths: no glibc, no /proc),
# not that it runs: there is no macOS to run it on here (docs/PORTABILITY.md). A SKIPPED line and
# exit 0 when rustup's or PyPI's servers cannot be reached, so that an outage does not block CI.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(aarch64-apple-darwin x86_64-apple-darwin)
VENV=target/zig-venv
skip() { echo "SKIPPED: $1" >&2; exit 0; }
for t in "${TARGETS[@]}"; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t" || skip "rustup target add $t failed"
done
if [ ! -x "$VENV/bin/cargo-zigbuild" ]; then
  python3 -m venv "$VENV" || skip "no python3 venv"
  "$VENV/bin/pip" install -q "ziglang==0.17.1" "cargo-zigbuild==0.24.1" || skip "pip install ziglang cargo-zigbuild failed"
fi
export PATH="$PWD/$VENV/bin:$PATH"
for t in "${TARGETS[@]}"; do
  # Warnings are errors here: code for Linux only must be cfg-gated, not merely compile.
  RUSTFLAGS="-D warnings" cargo-zigbuild check --release --target "$t" -p lincir -p lincir-cli --all-targets
  echo "macos ($t): compiles"
done
