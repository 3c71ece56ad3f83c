#!/usr/bin/env bash
# Every GPU check of issue 9 in one run, on the lent H200 (docs/GPU.md), from the repo root:
#
#   scripts/gpu_check.sh
#
# Needs gpu-bin/ (a CUDA build and the test binaries: scripts/package_gpu_check.sh makes it;
# carry it) and, for the end-to-end check, gpu-data/shapes.tar.xz (the shapes world's clip/,
# captions.txt and bench/; also made by the packaging script when ../shared is there). Python
# with torch and transformers is the machine's own. Writes $OUT/gpu_check.json (every number),
# $OUT/summary.md, $OUT/log.txt and $OUT/details.tar.gz. Sections are independent and time-limited: one that fails is
# recorded with its exit code and the others still run.
#
# The lent machine takes at most 64 MiB of carried files and 10 minutes per call, 15 minutes of
# device time in all, starting it included (minutes): in practice two calls. The binaries travel
# xz-compressed (gpu-bin/*.xz, unpacked here); the shapes world (46 MB) cannot travel with them,
# so it comes in a second call made at once (the machine is given back after 30 s idle, and the
# second call finds gpu-bin/ only on the same machine). SECTIONS: a regex of the sections to run;
# SKIP: of those to leave out; LINCIR_CHECK_BUDGET_S: seconds this call may use (default 570),
# after which the remaining sections are recorded as skipped instead of the call being killed
# mid-section. Sections run in the order of what issue 9 needs most:
#   1. carry ["gpu-bin"], LINCIR_CHECK_BUDGET_S=480, SKIP='shapes|fused|peers': parity, the SMP
#      step, then the headline numbers (bigG/14 bf16 training against the original's fp16 step,
#      ViT-L/14 images bf16 against transformers fp16), then the other towers and dtypes, image
#      throughput, `index` end to end, search latency, autograd, the fused kernels' parity
#   2. carry ["gpu-data"] at once, LINCIR_CHECK_BUDGET_S=<what is left>, SECTIONS='^shapes':
#      the shapes world in f32 and bf16, resuming bit for bit, Pic2Word
#   3. only with time left: SECTIONS=fused (everything through LINCIR_CUDA_FUSED=1), then
#      SECTIONS=peers (SEARLE on the device, not an issue 9 check)
#
# A dry run of the same flow on the CPU with tiny models (to test this script without a GPU):
#   LINCIR_CHECK_DEVICE=cpu LINCIR_BIN=target/release/lincir scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
DEV=${LINCIR_CHECK_DEVICE:-cuda}
BIN=${LINCIR_BIN:-gpu-bin/lincir}
STEP_TEST=${LINCIR_STEP_TEST:-gpu-bin/smp_parity}
OPS_TEST=${LINCIR_OPS_TEST:-gpu-bin/cuda_ops}
PY=${PYTHON:-python3}
W=${LINCIR_CHECK_WORK:-/tmp/lincir-gpu-check}
mkdir -p "$W"
# Sections that would end past this call's budget are skipped (and said so), so that a call is
# never killed mid-section with its last numbers lost.
DEADLINE=$(( $(date +%s) + ${LINCIR_CHECK_BUDGET_S:-570} ))
# At most 8 files come back from the device's $OUT: the sections write their files to a folder
# of the work dir, and after every section $OUT gets gpu_check.json, summary.md, log.txt and
# details.tar.gz (all of them), so that a call stopped at its time limit still returns them.
FINAL=${OUT:-target/gpu-check}
mkdir -p "$FINAL"
OUT="$W/details-$(date +%s)"
mkdir -p "$OUT"
RES="$OUT/results.jsonl"
: > "$RES"
# The log is written where it comes back from, as it grows: a call that ends abruptly still
# returns every line written before.
LOG="$FINAL/log.txt"
: > "$LOG"
# Binaries carried compressed (scripts/package_gpu_check.sh): unpack once.
for f in "$BIN" "$STEP_TEST" "$OPS_TEST"; do
  if [ ! -x "$f" ] && [ -f "$f.xz" ]; then
    "${PYTHON:-python3}" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$f.xz" "$f.partial" \
      && chmod +x "$f.partial" && mv "$f.partial" "$f"
  fi
done
# (A fresh machine given a later call without gpu-bin: nothing can run.)
if [ ! -x "$BIN" ]; then
  echo "no $BIN here: carry gpu-bin (scripts/package_gpu_check.sh), or the machine was given back since the call that did" | tee -a "$LOG"
  exit 1
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 LINCIR_CACHE="$W/cache"

if [ "$DEV" = cpu ]; then
  SIZE_VL=tiny; SIZE_TEXT=(tiny); BATCH_TRAIN=16; BATCH_IMG=8; STEPS=2; N_INDEX=32; N_SEARCH=2000; SHAPES_STEPS=20; RESUME_STEPS=10
  OTI_STEPS=3
  # The GPU's dtype lists, so that the dry run goes through the same code (PyTorch's fp16
  # autocast included, which the CPU runs too).
  TORCH_PRECISIONS=(fp16 f32); IMG_DTYPES=(bf16 f16 f32); TRAIN_DTYPES=(bf16 f32); TORCH_IMG_DTYPES=(fp16 f32); INDEX_DTYPE=bf16
else
  SIZE_VL=large; SIZE_TEXT=(bigG-text large-text);  # bigG/14 first: the issue's targets
  BATCH_TRAIN=512; BATCH_IMG=256; STEPS=5; N_INDEX=2048; N_SEARCH=100000; SHAPES_STEPS=1000; RESUME_STEPS=100
  OTI_STEPS=350
  # f16 training (for GPUs without bf16) is not timed: one minute of the first call saved.
  # The first of each list is the headline, run first: bf16 against the original's fp16.
  TORCH_PRECISIONS=(fp16 f32); IMG_DTYPES=(bf16 f16 f32); TRAIN_DTYPES=(bf16 f32); TORCH_IMG_DTYPES=(fp16 f32); INDEX_DTYPE=bf16
fi

log() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
# Whether SECTIONS and SKIP select the section NAME.
selected() {
  if [ -n "${SECTIONS:-}" ] && ! [[ "$1" =~ $SECTIONS ]]; then return 1; fi
  if [ -n "${SKIP:-}" ] && [[ "$1" =~ $SKIP ]]; then return 1; fi
  return 0
}
# Whether a selected section needs the random models of step 3.
needs_models() {
  local n
  for n in parity fused_parity train_lincir_ train_torch_ fused_train_lincir_ encode_lincir_ encode_torch_ fused_encode_lincir_ index_rate index_search_ autograd_train_lincir_; do
    selected $n && return 0
  done
  return 1
}
# Sections run in this call (each at most once: the headline ones come first, then the loops
# that would repeat them).
declare -A RAN=()
# section NAME SECONDS CMD...: runs CMD with a time limit (cut to what is left of the call's
# budget; skipped when under 30 s are left), records its exit code and duration.
section() {
  local name=$1 limit=$2
  shift 2
  # ALWAYS=1: a prerequisite of whatever runs (the random models), not filtered.
  [ -n "${ALWAYS:-}" ] || selected "$name" || return 0
  [ -z "${RAN[$name]:-}" ] || return 0
  RAN[$name]=1
  local left=$(( DEADLINE - $(date +%s) - 15 ))
  if [ "$left" -lt 30 ]; then
    log "== $name: skipped, ${left} s of this call's budget left"
    printf '{"section": "%s", "rc": -1, "seconds": 0, "skipped": "budget"}\n' "$name" >> "$RES"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "== $name (at most $limit s)"
  local t0=$EPOCHREALTIME
  # Functions run in a child bash (timeout runs programs): they and the settings are exported.
  # -k: a process that ignores SIGTERM (stuck in the driver) is killed 15 s later.
  if declare -F "$1" >/dev/null; then
    timeout -k 15 "$limit" bash -c "$*" >> "$LOG" 2>&1
  else
    timeout -k 15 "$limit" "$@" >> "$LOG" 2>&1
  fi
  local rc=$?
  printf '{"section": "%s", "rc": %d, "seconds": %.1f}\n' "$name" "$rc" "$(echo "$EPOCHREALTIME - $t0" | awk '{print $1 - $3}')" >> "$RES"
  [ $rc -ne 0 ] && log "   failed: exit $rc"
  summarize > /dev/null
  return 0
}
# The CUDA libraries the binary links (cuBLAS, cuRAND, NVRTC, runtime) from the Python
# environment's nvidia wheels, as torch uses them.
NVLIB=$("$PY" - <<'PYEOF'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for f in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PYEOF
)
export LD_LIBRARY_PATH="$NVLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The driver's libcuda.so.1, where the loader's cache does not list it (a container may mount the
# driver's folder without it): the usual folders, else where PyTorch loaded it from.
# (grep without -q reads the whole list: with pipefail, an early exit would fail ldconfig.)
if [ "$DEV" != cpu ] && ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep 'libcuda\.so\.1' > /dev/null; then
  driver=""
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/cuda/compat; do
    [ -e "$d/libcuda.so.1" ] && { driver=$d; break; }
  done
  [ -n "$driver" ] || driver=$("$PY" -c "import torch, os; torch.cuda.init(); print(next((os.path.dirname(l.split()[-1]) for l in open('/proc/self/maps') if 'libcuda.so' in l), ''))" 2>/dev/null)
  [ -n "$driver" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$driver"
  echo "libcuda.so.1 not in the loader's cache; using ${driver:-nothing found}" | tee -a "$LOG"
fi

export OUT LOG DEV BIN STEP_TEST OPS_TEST PY W SIZE_VL BATCH_IMG BATCH_TRAIN STEPS N_INDEX N_SEARCH SHAPES_STEPS RESUME_STEPS OTI_STEPS LD_LIBRARY_PATH INDEX_DTYPE

# The summary of what has run so far, into $FINAL: every JSON in one file, the main ratios as a
# table, the log, and everything the sections wrote.
summarize() {
  "$PY" - "$OUT" "$FINAL" <<'PYEOF'
import glob, json, os, sys
out, final = sys.argv[1], sys.argv[2]
summary = {"sections": [json.loads(l) for l in open(os.path.join(out, "results.jsonl"))]}
# The numbers of earlier calls on this machine too (their folders beside this one), this call's
# last: the ratios can pair a number of this call with one of an earlier call.
earlier = [d for d in sorted(glob.glob(os.path.join(os.path.dirname(out), "details-*"))) if d != out]
for f in [f for d in earlier + [out] for f in sorted(glob.glob(os.path.join(d, "*.json")))]:
    name = os.path.basename(f)[:-5]
    if name == "gpu_check":
        continue
    try:
        summary[name] = json.load(open(f))
    except Exception as e:
        summary[name] = {"unreadable": str(e)}
parity = os.path.join(out, "parity.jsonl")
summary["parity"] = [json.loads(l) for l in open(parity) if l.strip()] if os.path.exists(parity) else []
resume = os.path.join(out, "resume.jsonl")
summary["resume"] = [json.loads(l) for l in open(resume) if l.strip()] if os.path.exists(resume) else []
def write(name, text):
    # Whole or not at all: a call ended during the write keeps the previous copy.
    tmp = os.path.join(final, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(final, name))
write("gpu_check.json", json.dumps(summary, indent=1))
lines = ["| section | exit | seconds |", "|---|---|---|"]
lines += [f"| {s['section']} | {'skipped (budget)' if s.get('skipped') else s['rc']} | {s['seconds']} |" for s in summary["sections"]]
lines += ["", "| parity | rel err |", "|---|---|"]
lines += [f"| {p['a'].split('/')[-1]} vs {p['b'].split('/')[-1]} | {p['rel_err']:.2e} |" for p in summary["parity"]]
lines += ["", "| training | samples/s | useful TFLOP/s |", "|---|---|---|"]
for k, v in summary.items():
    if k.startswith("train_lincir"):
        lines.append(f"| {k} | {v.get('samples_per_s', 0):.1f} | {v.get('useful_gflops', 0) / 1e3:.1f} |")
    elif k.startswith("train_torch"):
        lines.append(f"| {k} (padded to 77) | {v.get('samples_per_s_padded_to_77', 0):.1f} | |")
# The issue's ratios: lincir's step against the original's (padded to 77) on the same tower.
ratios = []
for k, v in summary.items():
    if k.startswith("train_lincir_") and not k.startswith("train_lincir_fused"):
        size, dt = k[len("train_lincir_"):].rsplit("_", 1)
        for p in ("fp16", "f32"):
            t = summary.get(f"train_torch_{size}_{p}", {})
            if t.get("samples_per_s_padded_to_77"):
                ratios.append(f"| {size} lincir {dt} / original {p} (batch {t.get('batch_size')}) | {v.get('samples_per_s', 0) / t['samples_per_s_padded_to_77']:.2f}x |")
for k, v in summary.items():
    if k.startswith("train_lincir_autograd_"):
        taped = summary.get("train_lincir_" + k[len("train_lincir_autograd_"):], {})
        if taped.get("samples_per_s") and v.get("samples_per_s"):
            ratios.append(f"| {k[len('train_lincir_autograd_'):]} hand-written backward / candle's autograd | {taped['samples_per_s'] / v['samples_per_s']:.2f}x |")
if ratios:
    lines += ["", "| training ratio | |", "|---|---|"] + ratios
lines += ["", "| encoding | images/s | texts/s | CPU threads' JPEG decode+preprocess/s (640x480 / 12 MP / 12 MP fast) |", "|---|---|---|---|"]
for k, v in summary.items():
    if k.startswith("encode_"):
        feed = f"{v.get('decode_preprocess_jpeg_640x480_per_s') or 0:.0f} / {v.get('decode_preprocess_jpeg_4032x3024_per_s') or 0:.1f} / {v.get('decode_preprocess_jpeg_4032x3024_fast_per_s') or 0:.1f}" if k.startswith("encode_lincir") else ""
        lines.append(f"| {k} | {v.get('images_per_s') or 0:.1f} | {v.get('texts_per_s') or 0:.1f} | {feed} |")
ref = summary.get("encode_torch_fp16") or summary.get("encode_torch_f32") or {}
for k, v in summary.items():
    if k.startswith("encode_lincir") and ref.get("images_per_s") and v.get("images_per_s"):
        lines.append(f"| {k} / transformers {ref.get('dtype')} | {v['images_per_s'] / ref['images_per_s']:.2f}x | | |")
if "index_rate" in summary:
    r = summary["index_rate"]
    lines.append(f"| index end to end | {(r.get('added', 0) + r.get('updated', 0)) / max(r.get('seconds', 1), 1e-9):.1f} | | |")
for k, v in summary.items():
    if k.startswith("search_lincir"):
        lines.append(f"| {k}: p50 ms total / query encoding / ranking | {v.get('total_ms_p50', 0):.2f} / {v.get('encode_ms_p50', 0):.2f} / {v.get('rank_ms_p50', 0):.2f} | | |")
for r in summary["resume"]:
    lines.append(f"\nresumed {r['dtype']}: bit-identical {r['bit_identical']}, max abs diff {r['max_abs_diff']:.2e}")
for dt in ("f32", "bf16", "fused_bf16", "pic2word", "searle"):
    k = f"shapes_eval_{dt}"
    if k in summary:
        # One run per method (SEARLE and SEARLE-OTI in one eval): each one's R@1 first.
        runs = summary[k].get("runs", [summary[k]])
        r1 = ", ".join(f"{r.get('label', r.get('mode'))} R@1 {r.get('metrics', {}).get('all', {}).get('R@1')}" for r in runs)
        lines.append(f"\nshapes {dt}: {r1}; {json.dumps(summary[k])[:400]}")
write("summary.md", "\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
  cp "$LOG" "$OUT/log.txt" 2> /dev/null
  tar czf "$FINAL/details.tar.gz.tmp" -C "$OUT" . 2> /dev/null && mv "$FINAL/details.tar.gz.tmp" "$FINAL/details.tar.gz"
}

# 1. The machine and the binary.
env_info() {
  nvidia-smi || true
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH (the Python environment's nvidia/*/lib folders first)"
  ldd "$BIN" | grep -E "cuda|cublas|curand|nvrtc|not found"
  "$BIN" --version
}
export -f env_info
section env 60 env_info

# 2. Asking for a device that is not there: one line, exit 1.
bad_device() {
  local out
  out=$("$BIN" bench encode --model crates/lincir/tests/fixtures/clip-a --device cuda:7 --text-batches 1 --image-batches 0 2>&1)
  local rc=$?
  echo "$out"
  [ $rc -eq 1 ] && [ "$(echo "$out" | grep -c '^error: ')" -eq 1 ]
}
export -f bad_device
section bad_device 30 bad_device

# 3. Random-weight models in their real configurations.
for size in "$SIZE_VL" "${SIZE_TEXT[@]}"; do
  [ -d "$W/models/$size" ] || ! needs_models || ALWAYS=1 section "model_$size" 240 "$PY" scripts/make_bench_model.py "$W/models/$size" --size "$size" --device "$DEV"
done

# 4. Embedding parity: lincir on the device (f32, bf16) against lincir on the CPU and
#    transformers on the device, on a ViT-L/14-sized CLIP.
parity() {
  local m="$W/models/$SIZE_VL" d="$W/parity"
  mkdir -p "$d/images"
  "$PY" - "$d" <<'PYEOF'
import sys, random
from pathlib import Path
from PIL import Image
d = Path(sys.argv[1]); random.seed(0)
words = "a photo of man woman dog cat red blue small large riding horse on beach at sunset".split()
(d / "texts.txt").write_text("\n".join(" ".join(random.choice(words) for _ in range(random.randint(3, 20))) for _ in range(16)) + "\n")
# One side exactly 224: preprocessing is then at most one resampling pass, so the comparison is
# about the towers (pixel parity is its own test; Pillow 13 changed the order of the two passes
# for some sizes, docs/PREPROCESSING.md).
for i in range(8):
    w, h = (224, random.randint(224, 640)) if i % 2 else (random.randint(224, 640), 224)
    img = Image.effect_noise((w, h), 40 + 10 * i).convert("RGB")
    img.save(d / "images" / f"img{i}.{'png' if i % 2 else 'jpg'}", quality=90)
PYEOF
  "$PY" scripts/gpu_parity.py embed "$m" "$d/texts.txt" "$d/images" "$d/transformers.safetensors" --device "$DEV" || return 1
  for dt in f32 bf16; do
    "$BIN" embed --model "$m" --device "$DEV" --dtype $dt --texts "$d/texts.txt" --out "$d/text_$dt.safetensors" || return 1
    "$BIN" embed --model "$m" --device "$DEV" --dtype $dt --images "$d/images" --out "$d/image_$dt.safetensors" || return 1
  done
  "$BIN" embed --model "$m" --device cpu --texts "$d/texts.txt" --out "$d/text_cpu.safetensors" || return 1
  "$BIN" embed --model "$m" --device cpu --images "$d/images" --out "$d/image_cpu.safetensors" || return 1
  for kind in text image; do
    for a in "${kind}_f32" "${kind}_bf16" "${kind}_cpu"; do
      "$PY" scripts/gpu_parity.py compare "$d/$a.safetensors:embeddings" "$d/transformers.safetensors:$kind" >> "$OUT/parity.jsonl"
    done
    "$PY" scripts/gpu_parity.py compare "$d/${kind}_f32.safetensors:embeddings" "$d/${kind}_cpu.safetensors:embeddings" >> "$OUT/parity.jsonl"
  done
  cat "$OUT/parity.jsonl"
}
: > "$OUT/parity.jsonl"
export -f parity
section parity 300 parity

# 5. The SMP step (loss, phi gradients, 20 AdamW steps) against the PyTorch step script run on
#    the same device.
step_parity() {
  "$PY" scripts/make_smp_fixtures.py --device "$DEV" --out "$W/smp" || return 1
  LINCIR_FIXTURES="$PWD/crates/lincir/tests/fixtures" LINCIR_SMP_FIXTURE="$W/smp" LINCIR_TEST_DEVICE="$DEV" \
    "$STEP_TEST" --nocapture --test-threads 1 2>&1 | tee "$OUT/step_parity.txt"
  return "${PIPESTATUS[0]}"
}
export -f step_parity
section step_parity 180 step_parity

# The original's step in PyTorch. Padded to 77 in f32, bigG/14's activations at batch 512 may not
# fit in the GPU's memory (the paper split its 512 over eight GPUs): then half the batch, said so
# in the JSON (samples/s barely depend on the batch at these sizes).
train_torch() {
  local size=$1 p=$2 out="$OUT/train_torch_$1_$2.json" batch
  for batch in "$BATCH_TRAIN" $((BATCH_TRAIN / 2)); do
    "$PY" scripts/bench_train_torch.py "$W/models/$size" --device "$DEV" --precision "$p" --batch-size "$batch" --steps "$STEPS" \
      --paddings 77 > "$out" 2> "$out.err" && { cat "$out.err"; rm -f "$out.err"; return 0; }
    cat "$out.err"
    grep -qi "out of memory" "$out.err" || return 1
    echo "out of memory at batch $batch"
  done
  return 1
}
export -f train_torch

# 6. Training throughput: lincir's step against the original's step in PyTorch (padded to 77;
#    fp16 autocast as `accelerate --mixed_precision fp16`, and f32), same batch, same device; and
# 7. image embedding throughput at ViT-L/14, batch 256: the tower alone, against transformers.
train_lincir() {
  section "train_lincir_$1_$2" 300 "$BIN" bench train --model "$W/models/$1" --device "$DEV" --dtype "$2" \
    --batch-size "$BATCH_TRAIN" --steps "$STEPS" --out "$OUT/train_lincir_$1_$2.json"
}
train_original() {
  section "train_torch_$1_$2" 300 train_torch "$1" "$2"
}
encode_lincir() {
  section "encode_lincir_$1" 240 "$BIN" bench encode --model "$W/models/$SIZE_VL" --device "$DEV" --dtype "$1" \
    --batch-size "$BATCH_IMG" --text-batches 2 --image-batches 5 --out "$OUT/encode_lincir_$1.json"
}
encode_original() {
  section "encode_torch_$1" 240 sh -c "'$PY' scripts/bench_encode_torch.py '$W/models/$SIZE_VL' --device $DEV --dtype $1 \
    --batch-size $BATCH_IMG --text-batches 2 --image-batches 5 > '$OUT/encode_torch_$1.json'"
}
# The issue's headline numbers first (the first text tower, bigG/14 on the GPU, in bf16 against
# the original's fp16; images in bf16 against transformers fp16), then every other pairing.
train_lincir "${SIZE_TEXT[0]}" "${TRAIN_DTYPES[0]}"
train_original "${SIZE_TEXT[0]}" "${TORCH_PRECISIONS[0]}"
encode_lincir "${IMG_DTYPES[0]}"
encode_original "${TORCH_IMG_DTYPES[0]}"
for size in "${SIZE_TEXT[@]}"; do
  for dt in "${TRAIN_DTYPES[@]}"; do train_lincir "$size" "$dt"; done
  for p in "${TORCH_PRECISIONS[@]}"; do train_original "$size" "$p"; done
done
for dt in "${IMG_DTYPES[@]}"; do encode_lincir "$dt"; done
for dt in "${TORCH_IMG_DTYPES[@]}"; do encode_original "$dt"; done

# 8. Images end to end (decode + preprocess on CPU threads feeding the GPU): `lincir index` over
#    640x480 JPEGs, against the tower's own rate above.
index_rate() {
  "$PY" - "$W/photos" "$N_INDEX" <<'PYEOF'
import sys, random
from pathlib import Path
from PIL import Image
d = Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True); random.seed(1)
base = Image.effect_noise((640, 480), 60).convert("RGB")
for i in range(int(sys.argv[2])):
    base.rotate(i % 360).save(d / f"p{i:05d}.jpg", quality=88)
PYEOF
  rm -rf "$W/photos.index"
  "$BIN" index --model "$W/models/$SIZE_VL" --device "$DEV" --dtype "$INDEX_DTYPE" --images "$W/photos" --out "$W/photos.index" \
    --batch-size "$BATCH_IMG" --json "$OUT/index_rate.json"
}
export -f index_rate
section index_rate 240 index_rate
# 8b. Search latency (`bench search`): each composed query's phi and text tower on the device,
#     ranking over a synthetic index of N_SEARCH entries on the CPU.
for dt in f32 bf16; do
  section "index_search_$dt" 120 "$BIN" bench search --model "$W/models/$SIZE_VL" --device "$DEV" --dtype $dt \
    --entries "$N_SEARCH" --queries 100 --out "$OUT/search_lincir_$dt.json"
done

# 8c. The training step through candle's autograd instead of the text encoder's hand-written
#     backward (LINCIR_TAPED=0; nn/taped.rs), for the first text tower in bf16: what it gains.
section "autograd_train_lincir_${SIZE_TEXT[0]}" 300 env LINCIR_TAPED=0 "$BIN" bench train --model "$W/models/${SIZE_TEXT[0]}" \
  --device "$DEV" --dtype bf16 --batch-size "$BATCH_TRAIN" --steps "$STEPS" --out "$OUT/train_lincir_autograd_${SIZE_TEXT[0]}_bf16.json"

# 8d. The fused GPU training ops (kernels/train_ops.cu) against the CPU's ops, f32/bf16/f16, values
#     and input gradients (tests/cuda_ops.rs); then the SMP step through them.
cuda_ops() {
  LINCIR_TEST_DEVICE="$DEV" "$OPS_TEST" --nocapture --test-threads 1 2>&1 | tee "$OUT/cuda_ops.txt"
  return "${PIPESTATUS[0]}"
}
export -f cuda_ops
[ "$DEV" != cpu ] && section cuda_ops 120 cuda_ops
# The same tests under compute-sanitizer, where the machine has it: out-of-bounds accesses
# (memcheck) and shared-memory races (racecheck: the kernels' reductions).
fused_sanitizer() {
  local sanitizer d
  sanitizer=$(command -v compute-sanitizer)
  # (Not always on the PATH: the CUDA toolkit's folders.)
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/nvidia/*/bin /usr/local/cuda/compute-sanitizer; do
    [ -n "$sanitizer" ] && break
    [ -x "$d/compute-sanitizer" ] && sanitizer="$d/compute-sanitizer"
  done
  [ -n "$sanitizer" ] || { echo "no compute-sanitizer here"; return 3; }
  local tool
  for tool in memcheck racecheck; do
    LINCIR_TEST_DEVICE="$DEV" "$sanitizer" --tool $tool --error-exitcode 9 "$OPS_TEST" --test-threads 1 2>&1 | tail -20 \
      | tee -a "$OUT/fused_sanitizer.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || return 1
  done
}
export -f fused_sanitizer
# Embedding parity again with LINCIR_CUDA_FUSED=1 (the fused activation, and in bf16 the products
# whose epilogue adds the bias), against the same transformers embeddings.
fused_parity() {
  local m="$W/models/$SIZE_VL" d="$W/parity" dt kind
  [ -f "$d/transformers.safetensors" ] || parity || return 1  # (a fresh machine: the plain run first)
  for dt in bf16 f32; do
    LINCIR_CUDA_FUSED=1 "$BIN" embed --model "$m" --device "$DEV" --dtype $dt --texts "$d/texts.txt" --out "$d/fused_text_$dt.safetensors" || return 1
    LINCIR_CUDA_FUSED=1 "$BIN" embed --model "$m" --device "$DEV" --dtype $dt --images "$d/images" --out "$d/fused_image_$dt.safetensors" || return 1
    for kind in text image; do
      "$PY" scripts/gpu_parity.py compare "$d/fused_${kind}_$dt.safetensors:embeddings" "$d/transformers.safetensors:$kind" >> "$OUT/parity.jsonl"
    done
  done
  cat "$OUT/parity.jsonl"
}
export -f fused_parity
section fused_parity 180 fused_parity
fused_step_parity() {
  LINCIR_CUDA_FUSED=1 LINCIR_FIXTURES="$PWD/crates/lincir/tests/fixtures" LINCIR_SMP_FIXTURE="$W/smp" LINCIR_TEST_DEVICE="$DEV" \
    "$STEP_TEST" --nocapture --test-threads 1 2>&1 | tee "$OUT/fused_step_parity.txt"
  return "${PIPESTATUS[0]}"
}
export -f fused_step_parity
# (the step fixture, when the first call's step_parity did not leave one on this machine)
[ -d "$W/smp" ] || ! selected fused_step_parity || timeout -k 15 120 "$PY" scripts/make_smp_fixtures.py --device "$DEV" --out "$W/smp" >> "$LOG" 2>&1
section fused_step_parity 180 fused_step_parity

# 6b. The same training steps through the fused GPU ops (LINCIR_CUDA_FUSED=1).
for dt in bf16 f32; do
  for size in "${SIZE_TEXT[@]}"; do
    section "fused_train_lincir_${size}_$dt" 300 env LINCIR_CUDA_FUSED=1 "$BIN" bench train --model "$W/models/$size" --device "$DEV" \
      --dtype "$dt" --batch-size "$BATCH_TRAIN" --steps "$STEPS" --out "$OUT/train_lincir_fused_${size}_$dt.json"
  done
done

# The vision tower's activation as one fused kernel (LINCIR_CUDA_FUSED=1).
for dt in "${IMG_DTYPES[@]}"; do
  section "fused_encode_lincir_$dt" 240 env LINCIR_CUDA_FUSED=1 "$BIN" bench encode --model "$W/models/$SIZE_VL" --device "$DEV" \
    --dtype "$dt" --batch-size "$BATCH_IMG" --text-batches 2 --image-batches 5 --out "$OUT/encode_lincir_fused_$dt.json"
done

# 9. The shapes world end to end on the device: train 1,000 x 64, then evaluate on CIRR val.
# The shapes world, unpacked once from what scripts/package_gpu_check.sh carried.
shapes_dir() {
  local s="$W/shapes"
  if [ ! -d "$s/clip" ] && [ -f gpu-data/shapes.tar.xz ]; then
    "$PY" scripts/pack_floats.py unpack gpu-data/shapes.tar.xz "$s.partial" && mv "$s.partial" "$s"
  fi
  [ -d "$s/clip" ] || { echo "no gpu-data/shapes.tar.xz: skipped" >&2; return 3; }
  echo "$s"
}
export -f shapes_dir
# shapes_run DTYPE NAME: train 1,000 x 64 in DTYPE into $W/shapes_NAME, then CIRR val into
# $OUT/shapes_eval_NAME.json (with the environment the caller sets, LINCIR_CUDA_FUSED included).
shapes_run() {
  local s dt=$1 name=$2
  s=$(shapes_dir) || return 3
  rm -rf "$W/shapes_$name"
  "$BIN" train --model $s/clip --captions $s/captions.txt --output-dir "$W/shapes_$name" --batch-size 64 --max-steps "$SHAPES_STEPS" \
    --device "$DEV" --dtype $dt || return 1
  "$BIN" eval --model $s/clip --phi "$W/shapes_$name/phi_latest.safetensors" --dataset cirr --dataset-path $s/bench \
    --device "$DEV" --dtype $dt --json "$OUT/shapes_eval_$name.json"
}
export -f shapes_run
shapes() {
  shapes_run f32 f32 && shapes_run bf16 bf16
}
export -f shapes
section shapes 420 shapes
# Resuming on the same device: 2N steps straight against N + N resumed, phi compared bit by
# bit (f32 and bf16; cuBLAS may pick other algorithms between runs: this says whether it does).
shapes_resume() {
  local s dt
  s=$(shapes_dir) || return 3
  for dt in f32 bf16; do
    rm -rf "$W/resume_${dt}_a" "$W/resume_${dt}_b"
    local common=(--model $s/clip --captions $s/captions.txt --batch-size 64 --checkpointing-steps $RESUME_STEPS --device "$DEV" --dtype $dt)
    "$BIN" train "${common[@]}" --output-dir "$W/resume_${dt}_a" --max-steps $((2 * RESUME_STEPS)) > /dev/null || return 1
    "$BIN" train "${common[@]}" --output-dir "$W/resume_${dt}_b" --max-steps $RESUME_STEPS > /dev/null || return 1
    "$BIN" train "${common[@]}" --output-dir "$W/resume_${dt}_b" --max-steps $((2 * RESUME_STEPS)) --resume > /dev/null || return 1
    "$PY" - "$W/resume_${dt}_a/phi_latest.safetensors" "$W/resume_${dt}_b/phi_latest.safetensors" "$dt" <<'PYEOF' | tee -a "$OUT/resume.jsonl"
import json, sys
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
print(json.dumps({"dtype": sys.argv[3], "max_abs_diff": diff, "bit_identical": all(a[k].equal(b[k]) for k in a)}))
PYEOF
  done
}
export -f shapes_resume
section shapes_resume 180 shapes_resume
# Pic2Word trained on the device (`train-pic2word` on the gallery's 512 images, 1,000 x 64): the
# second training objective through the GPU's text-tower backward; R@1 against the CPU's
# 52.47 +- 0.49 over three seeds (docs/TRAINING.md, "Pic2Word").
shapes_pic2word() {
  local s
  s=$(shapes_dir) || return 3
  rm -rf "$W/p2w"
  "$BIN" train-pic2word --model $s/clip --images $s/bench/dev --output-dir "$W/p2w" --batch-size 64 --max-steps "$SHAPES_STEPS" \
    --lr 1e-4 --seed 0 --device "$DEV" --no-cache > "$OUT/shapes_pic2word_train.txt" || return 1
  "$BIN" eval --model $s/clip --phi "pic2word=$W/p2w/im2text_latest.safetensors" --dataset cirr --dataset-path $s/bench \
    --device "$DEV" --json "$OUT/shapes_eval_pic2word.json"
}
export -f shapes_pic2word
section shapes_pic2word 120 shapes_pic2word
# The shapes world in bf16 through the fused GPU ops: R@1 within the seed spread of the above.
fused_shapes() {
  # Its own feature cache: the gallery is embedded again, through the fused ops.
  LINCIR_CUDA_FUSED=1 LINCIR_CACHE="$W/cache_fused" shapes_run bf16 fused_bf16
}
export -f fused_shapes
section fused_shapes 240 fused_shapes
# Last: the slowest and least needed (the kernels' own races and bounds).
[ "$DEV" != cpu ] && section fused_sanitizer 150 fused_sanitizer
# 10. SEARLE trained on the device, outside issue 9's checks (a last call, only with time left:
#     SECTIONS=peers): `train-searle` on the gallery's 512 images with the shapes vocabulary of
#     scripts/shapes_vocabulary.py (inversion of every image, 350 steps per batch of 32, then phi
#     1,000 x 64), evaluated as SEARLE and SEARLE-OTI with SEARLE's transform; against the CPU's
#     seed 0 in bench-results/2026-12-01-shapes-peers-zen5/eval-gallery-0.json (three seeds:
#     SEARLE 53.72 +- 0.89, SEARLE-OTI 59.63 +- 0.28; docs/TRAINING.md, "SEARLE").
peers_searle() {
  local s
  s=$(shapes_dir) || return 3
  "$PY" scripts/shapes_vocabulary.py "$W/vocabulary.txt"
  rm -rf "$W/searle"
  "$BIN" train-searle --model $s/clip --images $s/bench/dev --vocabulary "$W/vocabulary.txt" --phrase-captions $s/captions.txt \
    --output-dir "$W/searle" --batch-size 64 --max-steps "$SHAPES_STEPS" --lr 1e-4 --oti-steps "$OTI_STEPS" --seed 0 \
    --device "$DEV" --no-cache > "$OUT/peers_searle_train.txt" || return 1
  "$BIN" eval --model $s/clip --phi "searle=$W/searle/searle_phi.pt" --searle-oti --oti-vocabulary "$W/vocabulary.txt" \
    --oti-phrase-captions $s/captions.txt --oti-steps "$OTI_STEPS" --oti-seed 0 --preprocess method --dataset cirr \
    --dataset-path $s/bench --device "$DEV" --json "$OUT/shapes_eval_searle.json"
}
export -f peers_searle
section peers_searle 360 peers_searle

summarize
