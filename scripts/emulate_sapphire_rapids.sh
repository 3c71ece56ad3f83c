#!/usr/bin/env bash
# emulate_sapphire_rapids.sh - run a static x86_64 Linux binary on an emulated
# Intel Sapphire Rapids CPU (AVX-512F/BW/DQ/VL, AVX512_BF16, AVX512_FP16;
# AMX is emulated by Bochs but not usable under Linux, see Caveats).
#
# Purpose: verify AVX-512 / AVX512-BF16 SIMD code paths on a host that cannot
# execute them natively (e.g. AMD Zen 3). The binary is booted inside the
# Bochs 3.0 x86 emulator (`cpu: model=sapphire_rapids`) under a stock Debian
# Linux kernel, with a busybox initramfs whose /init runs the binary and
# reports its exit status on the serial console.
#
# Usage:
#   scripts/emulate_sapphire_rapids.sh BINARY [ARGS...]
#
#   BINARY must be a *statically linked* x86_64 Linux executable (C: gcc -static;
#   Rust: RUSTFLAGS='-C target-feature=+crt-static' cargo build --target
#   x86_64-unknown-linux-gnu). It runs as root (pid != 1) in / of a RAM-only
#   initramfs; BINARY is copied into the guest (as /opt/test/NAME), and so are
#   the paths in BOCHS_SR_FILES (at the same absolute paths).
#   Its stdout+stderr (merged, via the serial console) are printed on this
#   script's stdout, and this script exits with the binary's exit code.
#   Boot/diagnostic messages go to stderr. Exit code 124 = timeout, 125 = the
#   emulator ended without reporting an exit code, 3 = a pinned download failed
#   (Debian rotated it out of its pool: update the pin), 2 = bad usage or setup.
#
# First use downloads (pinned versions, sha256-checked) and builds everything
# into a cache dir (~2-3 min on 2 cores, mostly compiling Bochs); later runs
# only rebuild the initramfs + boot ISO (well under a second) and boot.
#
# Environment:
#   BOCHS_SR_DIR      cache dir (default: <repo>/target/bochs-sr)
#   BOCHS_SR_TIMEOUT  wall-clock seconds before the emulator is killed (default 3600)
#   BOCHS_SR_MEM_MB   guest RAM in MiB (default 1024)
#   BOCHS_SR_IPS      Bochs "ips" (only scales emulated PIT/HPET/serial time;
#                     the guest's TSC/clock runs at 2.2 GHz per instruction
#                     regardless) (default 200000000)
#   BOCHS_SR_CMDLINE  extra kernel command line arguments (e.g. loglevel=7)
#   BOCHS_SR_KERNEL   use this bzImage instead of the pinned Debian kernel
#   BOCHS_SR_FILES    space-separated files or directories to copy into the
#                     guest at the same absolute paths (test fixtures)
#   BOCHS_SR_VERBOSE  1 = copy the full serial console log to stderr
#   BOCHS_SR_KEEP     1 = keep the per-run dir (bochsrc, serial.log, bochs.log)
#   BOCHS_SR_JOBS     make -j for building Bochs (default: nproc)
#
# Speed (Zen 3 host, 2 cores): boot + power-off ~9.5 s wall (~1.5e9 guest
# instructions); ~100 MIPS for plain scalar code; AVX-512 is emulated lane by
# lane in softfloat: ~5M zmm VFMADD*PS/s, ~2.6M zmm VDPBF16PS/s. So 1 s of
# native runtime ~ minutes here: keep tests small. Single CPU (no SMP):
# threads work but run interleaved on one core.
#
# Caveats: AMX is NOT usable (Bochs 3.0 lacks XFD, which Linux requires for AMX;
# the kernel is booted with clearcpuid=amx_* and XCR0 has no tile bits, though
# raw CPUID still shows the AMX bits). AVX-512F/BW/CD/DQ/VL/VNNI/VBMI/IFMA/
# BITALG/VPOPCNTDQ, AVX512_BF16 and AVX512_FP16 are available and enabled in
# XCR0, so std::is_x86_feature_detected!/__builtin_cpu_supports see them.
# Bochs 3.0 is patched at build time (VCVTNE2PS2BF16 upper-half bug and
# VDPBF16PS memory-displacement bug, see patch_bochs_src below).
#
# Host requirements: bash, curl, xz, dpkg-deb, gzip, g++/make (to build Bochs),
# xorriso (to make the boot ISO). Missing ones are apt-get installed when
# running as root on Debian/Ubuntu.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SR_DIR=${BOCHS_SR_DIR:-$REPO_ROOT/target/bochs-sr}
TIMEOUT=${BOCHS_SR_TIMEOUT:-3600}
MEM_MB=${BOCHS_SR_MEM_MB:-1024}
IPS=${BOCHS_SR_IPS:-200000000}
EXTRA_CMDLINE=${BOCHS_SR_CMDLINE:-}
VERBOSE=${BOCHS_SR_VERBOSE:-0}
KEEP=${BOCHS_SR_KEEP:-0}
JOBS=${BOCHS_SR_JOBS:-$(nproc 2>/dev/null || echo 2)}

# ---- pinned inputs: "URL sha256" --------------------------------------------
DEB=http://deb.debian.org/debian/pool/main
# Bochs 3.0 source (Debian trixie's repack of upstream 3.0; only non-free docs removed).
BOCHS_SRC_URL=$DEB/b/bochs/bochs_3.0+dfsg.orig.tar.xz
BOCHS_SRC_SHA=78f6c73d4a6472d5130a87ab9dc306d02c7c71ed8e25b3a8ef642e2a7acd282b
# Bochs rombios (BIOS-bochs-latest) and LGPL VGA BIOS.
BOCHSBIOS_URL=$DEB/b/bochs/bochsbios_3.0+dfsg-1_all.deb
BOCHSBIOS_SHA=13f8f4bdd9bb5c07378b7e39042cb631ebdd41d00b0f1a3091caab17ca946a5b
VGABIOS_URL=$DEB/v/vgabios/vgabios_0.8a+ds-2_all.deb
VGABIOS_SHA=921cca705c76139df423782979c3e4fe93a246ae3adc143ba17a321decf3544b
# Debian trixie "cloud" kernel 6.12 (small, zstd-compressed, 8250 serial console,
# initramfs and devtmpfs built in). Debian removes superseded kernels from the
# pool at point releases - then bump this pin (find the current one in
# http://deb.debian.org/debian/dists/trixie/main/binary-amd64/Packages.xz),
# or point BOCHS_SR_KERNEL at a bzImage.
# NOTE: bookworm's 6.1.0-47-amd64 kernel does NOT work: under Bochs it runs a
# memmove off the end of the kernel image during LSM init and then loops in a
# page-fault storm (looks hung).
KERNEL_VER=6.12.117+deb13-cloud-amd64
KERNEL_URL=$DEB/l/linux/linux-image-6.12.117%2bdeb13-cloud-amd64-unsigned_6.12.117-1_amd64.deb
KERNEL_SHA=4113a615a1f1535ed4356ca03d428c74536b00f6ccb58e049a2ffd6a1cb3f1ad
KERNEL_PATH_IN_DEB=./boot/vmlinuz-$KERNEL_VER
BUSYBOX_URL=$DEB/b/busybox/busybox-static_1.35.0-4%2bdeb12u1%2bb1_amd64.deb
BUSYBOX_SHA=3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744
ISOLINUX_URL=$DEB/s/syslinux/isolinux_6.04%7egit20190206.bf6db5b4%2bdfsg1-3_all.deb
ISOLINUX_SHA=cb14af88adc2c3844976cd2de61571d2af94d2fb65c277fe4acf3dc8a5d25aae
SYSLINUX_COMMON_URL=$DEB/s/syslinux/syslinux-common_6.04%7egit20190206.bf6db5b4%2bdfsg1-3_all.deb
SYSLINUX_COMMON_SHA=f7e4ead7fdfe5cb6117d8d2485d75e53570a8cf680c81a432f92c1774f878875
# Optional override: BOCHS_SR_KERNEL=/path/to/bzImage uses that kernel instead.

BOCHS_CONFIGURE_FLAGS=(
  --with-nogui --disable-plugins --disable-docbook
  --enable-x86-64 --enable-cpu-level=6 --enable-pci
  --enable-avx --enable-evex --enable-amx
  --enable-all-optimizations
)
# Bump when the build recipe changes, to force a rebuild of the cached Bochs.
BOCHS_BUILD_ID="3.0-3 fix-vcvtne2ps2bf16 fix-vdpbf16ps-disp8 ${BOCHS_CONFIGURE_FLAGS[*]}"

# Fix a Bochs 3.0 bug: VCVTNE2PS2BF16 (_mm*_cvtne2ps_pbh) fills the upper half
# of the result from op1.dword[n] with n = DWORD_ELEMENTS..WORD_ELEMENTS-1
# instead of n - DWORD_ELEMENTS, i.e. from the wrong lanes (out of bounds of
# the register for 512-bit) -> garbage in the upper 16 bf16 results.
patch_bochs_src() {
  local f=$1/cpu/avx/avx512_bf16.cc
  grep -q 'convert_ne_fp32_to_bfloat16(op1.vmm32u(n));' "$f" || die "Bochs patch target not found in $f"
  sed -i 's/convert_ne_fp32_to_bfloat16(op1\.vmm32u(n));/convert_ne_fp32_to_bfloat16(op1.vmm32u(n - DWORD_ELEMENTS(len)));/' "$f"
  grep -q 'op1.vmm32u(n - DWORD_ELEMENTS(len))' "$f" || die "patching $f failed"
  # Second bug: VDPBF16PS declares its memory operand a scalar dword (OP_mVdq32), so a
  # compressed EVEX displacement (disp8*N) is scaled by 4 instead of the vector's 64 bytes:
  # `vdpbf16ps -0x40(%r11), ...` read 4 bytes below its operand (garbage results; compilers
  # emit this form). A full vector with dword broadcast, as VPDPBUSD declares it, is right.
  f=$1/cpu/decoder/ia_opcodes_evex.def
  grep -q 'VDPBF16PS_MASK_VpsHdqWdqR, BX_ISA_AVX512_BF16, OP_Vps, OP_Hdq, OP_mVdq32,' "$f" || die "Bochs patch target not found in $f"
  sed -i 's/VDPBF16PS_MASK_VpsHdqWdqR, BX_ISA_AVX512_BF16, OP_Vps, OP_Hdq, OP_mVdq32,/VDPBF16PS_MASK_VpsHdqWdqR, BX_ISA_AVX512_BF16, OP_Vps, OP_Hdq, OP_mVdq,/' "$f"
  grep -q 'VDPBF16PS_MASK_VpsHdqWdqR, BX_ISA_AVX512_BF16, OP_Vps, OP_Hdq, OP_mVdq,' "$f" || die "patching $f failed"
}

log() { printf '[emulate_sr] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# ---- host tools ---------------------------------------------------------------
ensure_tools() {
  local missing=() t pkg
  declare -A pkg_of=([curl]=curl [xz]=xz-utils [dpkg-deb]=dpkg [gzip]=gzip
                      [g++]=g++ [make]=make [xorriso]=xorriso [sha256sum]=coreutils)
  for t in "${!pkg_of[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("${pkg_of[$t]}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing host packages: ${missing[*]}"
    apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
      || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
  else
    die "missing host packages: ${missing[*]} (install them and retry)"
  fi
}

# fetch URL SHA256 -> prints local path of the verified file in $SR_DIR/dl
fetch() {
  local url=$1 sha=$2 name f
  name=$(basename "$url"); name=${name//%2b/+}; name=${name//%7e/\~}
  f=$SR_DIR/dl/$name
  if [ -f "$f" ] && echo "$sha  $f" | sha256sum -c --status; then
    echo "$f"; return 0
  fi
  mkdir -p "$SR_DIR/dl"
  log "downloading $url"
  curl -fsSL --retry 3 -o "$f.part" "$url" || { log "error: download failed: $url (pinned version gone? update the pin in $0)"; exit 3; }
  echo "$sha  $f.part" | sha256sum -c --status || die "sha256 mismatch for $url"
  mv "$f.part" "$f"
  echo "$f"
}

# deb_extract DEB PATH_IN_DEB DEST
deb_extract() {
  local tmp
  tmp=$(mktemp -d "$SR_DIR/tmp.XXXXXX")
  dpkg-deb --fsys-tarfile "$1" | tar -x -C "$tmp" "$2"
  mv -f "$tmp/$2" "$3"
  rm -rf "$tmp"
}

# ---- one-time setup (idempotent, under a lock) -------------------------------
setup() {
  local deb
  mkdir -p "$SR_DIR"/{dl,bin,runs}
  exec 9>"$SR_DIR/.lock"
  flock 9
  ensure_tools

  # Bochs
  if [ ! -x "$SR_DIR/bin/bochs" ] || [ "$(cat "$SR_DIR/bin/bochs.build-id" 2>/dev/null)" != "$BOCHS_BUILD_ID" ]; then
    local src; src=$(fetch "$BOCHS_SRC_URL" "$BOCHS_SRC_SHA")
    rm -rf "$SR_DIR/bochs-src" "$SR_DIR/bochs-build"
    mkdir -p "$SR_DIR/bochs-src" "$SR_DIR/bochs-build"
    tar -xJf "$src" -C "$SR_DIR/bochs-src" --strip-components=1
    patch_bochs_src "$SR_DIR/bochs-src"
    log "configuring Bochs 3.0 (log: $SR_DIR/bochs-build/build.log)"
    ( cd "$SR_DIR/bochs-build" &&
      CFLAGS=-O2 CXXFLAGS=-O2 ../bochs-src/configure "${BOCHS_CONFIGURE_FLAGS[@]}" ) \
      >"$SR_DIR/bochs-build/build.log" 2>&1 || die "Bochs configure failed, see $SR_DIR/bochs-build/build.log"
    log "building Bochs 3.0 with make -j$JOBS (takes ~2-3 min on 2 cores)"
    make -C "$SR_DIR/bochs-build" -j"$JOBS" bochs >>"$SR_DIR/bochs-build/build.log" 2>&1 \
      || die "Bochs build failed, see $SR_DIR/bochs-build/build.log"
    # copy + rename: other runs may be executing the old binary right now
    install -m 755 "$SR_DIR/bochs-build/bochs" "$SR_DIR/bin/bochs.new"
    mv -f "$SR_DIR/bin/bochs.new" "$SR_DIR/bin/bochs"
    echo "$BOCHS_BUILD_ID" >"$SR_DIR/bin/bochs.build-id"
    rm -rf "$SR_DIR/bochs-src" "$SR_DIR/bochs-build"
  fi

  if [ ! -f "$SR_DIR/bin/BIOS-bochs-latest" ]; then
    deb=$(fetch "$BOCHSBIOS_URL" "$BOCHSBIOS_SHA")
    deb_extract "$deb" ./usr/share/bochs/BIOS-bochs-latest "$SR_DIR/bin/BIOS-bochs-latest"
  fi
  if [ ! -f "$SR_DIR/bin/vgabios.bin" ]; then
    deb=$(fetch "$VGABIOS_URL" "$VGABIOS_SHA")
    deb_extract "$deb" ./usr/share/vgabios/vgabios.bin "$SR_DIR/bin/vgabios.bin"
  fi
  if [ ! -f "$SR_DIR/bin/vmlinuz-$KERNEL_VER" ] && [ -z "${BOCHS_SR_KERNEL:-}" ]; then
    deb=$(fetch "$KERNEL_URL" "$KERNEL_SHA")
    deb_extract "$deb" "$KERNEL_PATH_IN_DEB" "$SR_DIR/bin/vmlinuz-$KERNEL_VER"
  fi
  # drop kernels of older pins
  find "$SR_DIR/bin" -maxdepth 1 -name 'vmlinuz*' ! -name "vmlinuz-$KERNEL_VER" -delete
  if [ ! -x "$SR_DIR/bin/busybox" ]; then
    deb=$(fetch "$BUSYBOX_URL" "$BUSYBOX_SHA")
    deb_extract "$deb" ./bin/busybox "$SR_DIR/bin/busybox"
  fi
  if [ ! -f "$SR_DIR/bin/isolinux.bin" ]; then
    deb=$(fetch "$ISOLINUX_URL" "$ISOLINUX_SHA")
    deb_extract "$deb" ./usr/lib/ISOLINUX/isolinux.bin "$SR_DIR/bin/isolinux.bin"
  fi
  if [ ! -f "$SR_DIR/bin/ldlinux.c32" ]; then
    deb=$(fetch "$SYSLINUX_COMMON_URL" "$SYSLINUX_COMMON_SHA")
    deb_extract "$deb" ./usr/lib/syslinux/modules/bios/ldlinux.c32 "$SR_DIR/bin/ldlinux.c32"
  fi
  # The downloaded .debs/tarball are kept in dl/ only as a cache; drop the big ones.
  rm -f "$SR_DIR/dl/"linux-image-*.deb "$SR_DIR/dl/"bochs_*.orig.tar.xz
  flock -u 9
}

# shell-quote for busybox ash: 'abc'\''def'
sq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

# ---- per-run -------------------------------------------------------------------
main() {
  [ $# -ge 1 ] || usage
  case $1 in -h|--help) usage ;; esac
  local bin=$1; shift
  [ -f "$bin" ] || die "no such file: $bin"
  if command -v readelf >/dev/null 2>&1; then
    local hdr
    hdr=$(readelf -hlW "$bin" 2>/dev/null) || die "$bin is not an ELF file"
    [[ $hdr == *'Advanced Micro Devices X86-64'* ]] || die "$bin is not an x86_64 ELF"
    if [[ $hdr == *'program interpreter'* ]]; then
      die "$bin is dynamically linked; build it statically (gcc -static / RUSTFLAGS='-C target-feature=+crt-static')"
    fi
  fi

  setup

  local run name kernel args a
  run=$(mktemp -d "$SR_DIR/runs/run.XXXXXX")
  BOCHS_PID=
  cleanup() {
    if [ -n "$BOCHS_PID" ] && kill -0 "$BOCHS_PID" 2>/dev/null; then
      kill "$BOCHS_PID" 2>/dev/null || true
      sleep 0.2; kill -9 "$BOCHS_PID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then log "kept run dir: $run"; else rm -rf "$run"; fi
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  name=$(basename "$bin")
  kernel=${BOCHS_SR_KERNEL:-$SR_DIR/bin/vmlinuz-$KERNEL_VER}

  # initramfs: busybox + /init + the binary
  local root=$run/root
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,opt/test,iso}
  cp "$SR_DIR/bin/busybox" "$root/bin/busybox"
  cp "$bin" "$root/opt/test/$name"; chmod 755 "$root/opt/test/$name"
  # Files the binary reads (test fixtures), at the same absolute paths as here.
  for f in ${BOCHS_SR_FILES:-}; do
    f=$(realpath "$f") || die "BOCHS_SR_FILES: $f does not exist"
    mkdir -p "$root$(dirname "$f")"
    cp -r "$f" "$root$f"
  done
  [ "$(id -u)" = 0 ] && mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
  args=""
  for a in "$@"; do args+=" $(sq "$a")"; done
  cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin:/opt/test HOME=/tmp TERM=dumb
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "BOCHS-RUN-CPU: \$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2)"
echo "BOCHS-RUN-FLAGS: \$(grep -o -w -E 'avx512f|avx512bw|avx512vl|avx512_bf16|avx512_fp16|amx_bf16|amx_tile|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "BOCHS-RUN-UPTIME: \$(cut -d' ' -f1 /proc/uptime)"
cd /
echo "BOCHS-RUN-START"
/opt/test/$(sq "$name")$args
rc=\$?
echo ""
echo "BOCHS-RUN-EXIT \$rc"
# let the tty drain to the UART before powering off (idle guest time is cheap)
sleep 1
poweroff -f
EOF
  chmod 755 "$root/init"
  ( cd "$root" && find . -path ./iso -prune -o -print | "$SR_DIR/bin/busybox" cpio -o -H newc 2>/dev/null ) \
    | gzip -1 >"$run/initrd.gz"

  # boot ISO (isolinux)
  local iso=$run/iso
  mkdir -p "$iso/isolinux"
  cp "$SR_DIR/bin/isolinux.bin" "$SR_DIR/bin/ldlinux.c32" "$iso/isolinux/"
  ln "$kernel" "$iso/vmlinuz" 2>/dev/null || cp "$kernel" "$iso/vmlinuz"
  mv "$run/initrd.gz" "$iso/initrd.gz"
  # clearcpuid=amx_*: Bochs 3.0 emulates AMX but not XFD (extended feature
  # disable). Linux requires XFD for AMX and, without it, programs XCR0 with
  # TILECFG but not TILEDATA -> #GP in XSETBV -> boot panic. Hiding AMX from the
  # kernel keeps AVX-512 (incl. BF16/FP16) fully usable; AMX is not usable.
  # aperfmperf: Bochs advertises APERF/MPERF but has no such MSRs (a #GP and a
  # bochs.log line on every timer tick otherwise).
  # no5lvl: 4-level paging (cheaper page walks in the emulator).
  cat >"$iso/isolinux/isolinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz console=ttyS0,115200 loglevel=3 panic=0 nokaslr mitigations=off no5lvl tsc=reliable clearcpuid=amx_tile,amx_bf16,amx_int8,aperfmperf rdinit=/init $EXTRA_CMDLINE
EOF
  xorriso -as mkisofs -quiet -o "$run/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$iso" >"$run/xorriso.log" 2>&1 \
    || { cat "$run/xorriso.log" >&2; die "xorriso failed"; }
  rm -rf "$root" "$iso"

  cat >"$run/bochsrc" <<EOF
display_library: nogui
romimage: file="$SR_DIR/bin/BIOS-bochs-latest", options=fastboot
vgaromimage: file="$SR_DIR/bin/vgabios.bin"
cpu: model=sapphire_rapids, count=1, ips=$IPS, reset_on_triple_fault=0, ignore_bad_msrs=1
memory: guest=$MEM_MB, host=$MEM_MB
clock: sync=none, time0=local
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path="$run/boot.iso", status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev="$run/serial.log"
mouse: enabled=0
log: "$run/bochs.log"
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
EOF

  local serial=$run/serial.log t0 now elapsed
  : >"$serial"
  t0=$(date +%s.%N)
  log "booting $name in Bochs (sapphire_rapids, ${MEM_MB} MiB, timeout ${TIMEOUT}s)"
  ( cd "$run" && exec "$SR_DIR/bin/bochs" -q -f "$run/bochsrc" </dev/null >"$run/bochs.out" 2>&1 ) &
  BOCHS_PID=$!
  local status=timeout
  while :; do
    if grep -q '^BOCHS-RUN-EXIT [0-9]*' "$serial" 2>/dev/null; then status=done; break; fi
    if grep -q -- '---\[ end Kernel panic' "$serial" 2>/dev/null; then status=panic; break; fi
    if ! kill -0 "$BOCHS_PID" 2>/dev/null; then
      grep -q '^BOCHS-RUN-EXIT [0-9]*' "$serial" 2>/dev/null && status=done || status=died
      break
    fi
    now=$(date +%s)
    if [ $(( now - ${t0%.*} )) -ge "$TIMEOUT" ]; then status=timeout; break; fi
    sleep 0.3
  done
  elapsed=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  if [ -n "$BOCHS_PID" ] && kill -0 "$BOCHS_PID" 2>/dev/null; then
    kill "$BOCHS_PID" 2>/dev/null || true
    wait "$BOCHS_PID" 2>/dev/null || true
  fi
  BOCHS_PID=

  local clean=$run/serial.txt
  tr -d '\r' <"$serial" >"$clean"
  [ "$VERBOSE" = 1 ] && { log "----- full serial log -----"; cat "$clean" >&2; log "----- end serial log -----"; }
  grep -E '^BOCHS-RUN-(CPU|FLAGS|UPTIME):' "$clean" | sed 's/^/[emulate_sr] /' >&2 || true
  # Guest output between the markers (the empty echo before EXIT ensures the
  # marker is on its own line; drop that trailing line).
  awk '/^BOCHS-RUN-START$/{on=1;next} /^BOCHS-RUN-EXIT [0-9]+$/{exit} on{buf[n++]=$0}
       END{ if(n>0 && buf[n-1]=="") n--; for(i=0;i<n;i++) print buf[i] }' "$clean"

  case $status in
    done)
      local rc
      rc=$(sed -n 's/^BOCHS-RUN-EXIT \([0-9]*\).*/\1/p' "$clean" | head -1)
      log "guest exit code $rc; boot+run took ${elapsed}s"
      exit "$rc" ;;
    timeout)
      log "timeout after ${elapsed}s; last serial output:"; tail -n 20 "$clean" >&2
      KEEP=1; exit 124 ;;
    *)
      log "no exit marker ($status: kernel panic or emulator exit) after ${elapsed}s; tail of serial log and bochs log:"
      tail -n 20 "$clean" >&2; tail -n 20 "$run/bochs.log" >&2 2>/dev/null || true
      KEEP=1; exit 125 ;;
  esac
}

main "$@"
