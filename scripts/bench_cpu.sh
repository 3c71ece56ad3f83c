#!/usr/bin/env bash
# The CPU performance campaign of docs/PERFORMANCE.md ("The CPU at its limit"), in one run on one
# machine: the matrix products (builtin kernel, and OpenBLAS / MKL / BLIS where installed) next
# to the CPU's peak; encoding (f32, f32 through a BLAS, bf16) and training against
# transformers/PyTorch measured in the same run; search latency over 100,000 and 1,000,000
# entries. Every result is a JSON file in OUT_DIR, with summary.json holding the ratios.
#
#   scripts/bench_cpu.sh MODEL_DIR OUT_DIR [PYTHON]
#
# MODEL_DIR: a ViT-L/14-sized CLIP (python3 scripts/make_bench_model.py /tmp/bench-clip-l).
# Environment: LINCIR_BLAS_LIBS (default "openblas mkl blis": the ones that load are measured),
# SEARCH_1M=0 to skip the 1,000,000-entry search (it needs ~7 GB of memory).
set -euo pipefail
model=$1; out=$2; py=${3:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
lincir="$here/target/release/lincir"
threads=${RAYON_NUM_THREADS:-$(nproc)}
mkdir -p "$out"
run() { echo "== $*" >&2; "$@"; }

# The BLAS libraries this machine can load.
blas=()
for lib in ${LINCIR_BLAS_LIBS:-openblas mkl blis}; do
  # lincir loads LINCIR_BLAS at start: a library that cannot be loaded is named in the error.
  if ! LINCIR_BLAS=$lib "$lincir" bench search --model /nonexistent 2>&1 | grep -q LINCIR_BLAS; then blas+=("$lib"); fi
done
blas_args=(); for b in "${blas[@]}"; do blas_args+=(--blas "$b"); done
echo "BLAS libraries found: ${blas[*]:-none}" >&2

run "$lincir" --threads "$threads" bench matmul "${blas_args[@]}" --out "$out/matmul.json"

run "$lincir" --threads "$threads" bench encode --model "$model" --out "$out/encode-f32.json"
run "$lincir" --threads "$threads" bench encode --model "$model" --dtype bf16 --out "$out/encode-bf16.json"
for b in "${blas[@]}"; do
  LINCIR_BLAS=$b run "$lincir" --threads "$threads" bench encode --model "$model" --out "$out/encode-f32-$b.json"
done
RAYON_NUM_THREADS=$threads run "$py" "$here/scripts/bench_encode_torch.py" "$model" > "$out/encode-torch.json"
# PyTorch's own bf16 (oneDNN's bf16 kernels where the CPU has them), for the comparison in kind.
RAYON_NUM_THREADS=$threads run "$py" "$here/scripts/bench_encode_torch.py" "$model" --dtype bf16 > "$out/encode-torch-bf16.json"

run "$lincir" --threads "$threads" bench train --model "$model" --out "$out/train-f32.json"
for b in "${blas[@]}"; do
  LINCIR_BLAS=$b run "$lincir" --threads "$threads" bench train --model "$model" --out "$out/train-f32-$b.json"
done
RAYON_NUM_THREADS=$threads run "$py" "$here/scripts/bench_train_torch.py" "$model" > "$out/train-torch.json"

run "$lincir" --threads "$threads" bench search --model "$model" --entries 100000 --out "$out/search-100k-f32.json"
run "$lincir" --threads "$threads" bench search --model "$model" --entries 100000 --dtype bf16 --out "$out/search-100k-bf16.json"
if [ "${SEARCH_1M:-1}" != 0 ]; then
  run "$lincir" --threads "$threads" bench search --model "$model" --entries 1000000 --queries 100 --dtype bf16 --out "$out/search-1m-bf16.json"
fi

"$py" - "$out" <<'PY'
import glob, json, os, sys, datetime
out = sys.argv[1]
load = lambda n: json.load(open(os.path.join(out, n))) if os.path.exists(os.path.join(out, n)) else None
t, tt = load("encode-torch.json"), load("train-torch.json")
s = {"date": datetime.date.today().isoformat(), "cpu": load("matmul.json")["cpu"],
     "cpu_features": load("matmul.json")["cpu_features"], "threads": load("matmul.json")["threads"],
     "peak_gflops_measured": load("matmul.json")["peak_gflops_measured"], "encode": {}, "train": {}, "search": {}}
print(f"{s['cpu']} ({' '.join(s['cpu_features'])}), {s['threads']} threads, FMA peak {s['peak_gflops_measured']:.0f} GFLOP/s")
print(f"{'encoding':34}{'texts/s':>9}{'x torch':>9}{'x t77':>8}{'images/s':>10}{'x torch':>9}{'GFLOP/s':>9}")
print(f"{'transformers (f32)':34}{t['texts_per_s']:9.1f}{'':9}{'':8}{t['images_per_s']:10.2f}")
tb = load("encode-torch-bf16.json")
if tb:
    s["encode_torch_bf16"] = {"texts_per_s": tb["texts_per_s"], "images_per_s": tb["images_per_s"]}
    print(f"{'transformers (bf16)':34}{tb['texts_per_s']:9.1f}{'':9}{'':8}{tb['images_per_s']:10.2f}")
for f in sorted(glob.glob(os.path.join(out, "encode-f*.json")) + glob.glob(os.path.join(out, "encode-bf16*.json"))):
    l = json.load(open(f)); name = os.path.basename(f)[7:-5]
    r = {"texts_per_s": l["texts_per_s"], "ratio_texts": l["texts_per_s"] / t["texts_per_s"],
         "ratio_texts_vs_torch_padded_to_77": l["texts_per_s"] / t["texts_per_s_padded_to_77"],
         "images_per_s": l["images_per_s"], "ratio_images": l["images_per_s"] / t["images_per_s"],
         "image_gflops": l["image_gflops"], "matmul": l["matmul"]}
    s["encode"][name] = r
    print(f"{name:34}{r['texts_per_s']:9.1f}{r['ratio_texts']:9.2f}{r['ratio_texts_vs_torch_padded_to_77']:8.2f}{r['images_per_s']:10.2f}{r['ratio_images']:9.2f}{r['image_gflops']:9.1f}")
print(f"{'training, batch 16':34}{'samples/s':>10}{'x torch77':>10}{'x longest':>10}")
print(f"{'PyTorch padded to 77 / longest':34}{tt['samples_per_s_padded_to_77']:10.2f}{'':10}{tt['samples_per_s']:10.2f}")
for f in sorted(glob.glob(os.path.join(out, "train-f*.json"))):
    l = json.load(open(f)); name = os.path.basename(f)[6:-5]
    r = {"samples_per_s": l["samples_per_s"], "ratio_vs_torch_padded_to_77": l["samples_per_s"] / tt["samples_per_s_padded_to_77"],
         "ratio_vs_torch_padded_to_longest": l["samples_per_s"] / tt["samples_per_s"]}
    s["train"][name] = r
    print(f"{name:34}{r['samples_per_s']:10.2f}{r['ratio_vs_torch_padded_to_77']:10.2f}{r['ratio_vs_torch_padded_to_longest']:10.2f}")
print(f"{'search, k 10':34}{'p50 ms':>9}{'encode':>9}{'rank':>9}{'exact':>9}{'same top-k':>11}")
for f in sorted(glob.glob(os.path.join(out, "search-*.json"))):
    l = json.load(open(f)); name = os.path.basename(f)[7:-5]
    s["search"][name] = {k: l[k] for k in ("entries", "total_ms_p50", "total_ms_p95", "encode_ms_p50", "rank_ms_p50", "rank_exact_f32_ms_p50", "top_k_identical_to_exact_f32", "ranking")}
    print(f"{name:34}{l['total_ms_p50']:9.1f}{l['encode_ms_p50']:9.1f}{l['rank_ms_p50']:9.1f}{l['rank_exact_f32_ms_p50']:9.1f}{l['top_k_identical_to_exact_f32']:11.4f}")
json.dump(s, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
