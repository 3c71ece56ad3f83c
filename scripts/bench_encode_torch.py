#!/usr/bin/env python3
"""The PyTorch/transformers side of `lincir bench encode`: the same synthetic captions and the
same batch size. Prints JSON.

    python3 scripts/bench_encode_torch.py MODEL_DIR [--batch-size 32] [--text-batches 5] [--image-batches 2]
                                          [--device cpu|cuda] [--dtype f32|fp16|bf16]

`--dtype fp16` loads the weights in half precision, as a user embedding a gallery on a GPU would.
"""
import argparse, json, os, time

import torch
from transformers import CLIPModel, CLIPTokenizer

WORDS = ("a the photo of man woman dog cat red blue small large riding horse on beach at sunset with two people "
         "standing next to car wooden table in kitchen green field under cloudy sky holding umbrella").split()
M = (1 << 64) - 1


def synthetic_captions(n, seed):
    """Same generator as lincir's bench (crates/lincir-cli/src/bench.rs)."""
    state = (seed * 6364136223846793005 + 1442695040888963407) & M
    out = []

    def nxt():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & M
        return state >> 33

    for _ in range(n):
        length = 8 + nxt() % 17
        out.append(" ".join(WORDS[nxt() % len(WORDS)] for _ in range(length)))
    return out


def features(out):
    return out if torch.is_tensor(out) else out.pooler_output


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--text-batches", type=int, default=5)
    ap.add_argument("--image-batches", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "fp16", "bf16"])
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = {"f32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()
    threads = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(args.model, dtype=dtype).to(dev).eval()
    tok = CLIPTokenizer.from_pretrained(args.model)
    b = args.batch_size
    texts = synthetic_captions(b * (args.text_batches + 1), 0)
    res = {"tool": "transformers " + __import__("transformers").__version__ + ", torch " + torch.__version__,
           "threads": threads, "batch_size": b, "device": str(dev), "dtype": args.dtype}
    with torch.inference_mode():
        for padding, key in (("longest", "texts_per_s"), ("max_length", "texts_per_s_padded_to_77")):
            secs = 0.0
            for i in range(args.text_batches + 1):
                t = time.perf_counter()
                enc = tok(texts[i * b:(i + 1) * b], padding=padding, max_length=77, truncation=True, return_tensors="pt")
                features(model.get_text_features(input_ids=enc["input_ids"].to(dev)))
                sync()
                if i > 0:
                    secs += time.perf_counter() - t
            res[key] = b * args.text_batches / secs
        if args.image_batches > 0:
            s = model.config.vision_config.image_size
            px = torch.randn(b, 3, s, s, device=dev, dtype=dtype)
            secs = 0.0
            for i in range(args.image_batches + 1):
                t = time.perf_counter()
                features(model.get_image_features(pixel_values=px))
                sync()
                if i > 0:
                    secs += time.perf_counter() - t
            res["images_per_s"] = b * args.image_batches / secs
    print(json.dumps(res))


if __name__ == "__main__":
    main()
