#!/usr/bin/env python3
"""The PyTorch/transformers side of `lincir bench train`: the same SMP training step (frozen CLIP
text tower, phi, pseudo word injected at id 259, MSE, AdamW), the same synthetic captions and
batch size, with the captions padded to 77 tokens as the original code does (and, for a
like-for-like number, padded to the batch's longest). Prints JSON with samples/s.

    python3 scripts/bench_train_torch.py MODEL_DIR [--batch-size 16] [--steps 6]
                                         [--device cpu|cuda] [--precision f32|fp16|bf16] [--paddings 77,longest]

On the GPU, `--precision fp16` is what the original's `accelerate --mixed_precision fp16` runs:
the frozen tower and phi in f32 weights under `torch.autocast(float16)`, the loss scaled by a
GradScaler, AdamW on f32 weights. The causal mask is transformers' own (the model is called with
input_ids; the pseudo word enters through a hook on the token embedding).
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path

import torch
import torch.nn as nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from bench_encode_torch import synthetic_captions  # noqa: E402
from make_clip_fixtures import check_causal  # noqa: E402

PLACEHOLDER = "[$]"


def mask(caption):
    """Stand-in masking with the same token count behaviour: the longest word becomes [$]
    (which words are masked does not change the cost of a step)."""
    words = caption.split(" ")
    longest = max(words, key=len)
    return caption.replace(longest, PLACEHOLDER)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32", choices=["f32", "fp16", "bf16"])
    ap.add_argument("--paddings", default="77,longest", help="which paddings to time, comma-separated")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    amp = {"f32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]

    def sync():
        if cuda:
            torch.cuda.synchronize()
    threads = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    model = CLIPTextModelWithProjection.from_pretrained(args.model, dtype=torch.float32).to(dev)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    check_causal(model)
    tok = CLIPTokenizer.from_pretrained(args.model)
    tok.add_special_tokens({"additional_special_tokens": [PLACEHOLDER]})
    pid = tok.convert_tokens_to_ids(PLACEHOLDER)
    P, W = model.config.projection_dim, model.config.hidden_size
    phi = nn.Sequential(nn.Linear(P, 4 * P), nn.GELU(), nn.Dropout(0.5), nn.Linear(4 * P, 4 * P), nn.GELU(),
                        nn.Dropout(0.5), nn.Linear(4 * P, W)).to(dev).train()
    opt = torch.optim.AdamW(phi.parameters(), lr=1e-4, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp is torch.float16)
    b = args.batch_size
    caps = synthetic_captions(b * (args.steps + 1), 1)
    emb = model.text_model.embeddings.token_embedding
    res = {"tool": "transformers " + __import__("transformers").__version__ + ", torch " + torch.__version__,
           "threads": threads, "batch_size": b, "device": str(dev), "precision": args.precision}
    if cuda:
        res["gpu"] = torch.cuda.get_device_name(dev)
    wanted = args.paddings.split(",")
    for padding, key in (("max_length", "samples_per_s_padded_to_77"), ("longest", "samples_per_s")):
        if {"max_length": "77", "longest": "longest"}[padding] not in wanted:
            continue
        times = []
        for s in range(args.steps + 1):
            batch = caps[s * b:(s + 1) * b]
            t = time.perf_counter()
            ids_c = tok(batch, padding=padding, max_length=77, truncation=True, return_tensors="pt").input_ids
            ids_r = tok([mask(c) for c in batch], padding=padding, max_length=77, truncation=True,
                        return_tensors="pt").input_ids
            ids_r = torch.where(ids_r == pid, torch.tensor(259), ids_r)
            ids_c, ids_r = ids_c.to(dev), ids_r.to(dev)
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                with torch.no_grad():
                    e = model(input_ids=ids_c).text_embeds
                x = e + torch.rand(b, 1, device=dev) * torch.randn(b, P, device=dev)
                w = phi(x)
                is_pseudo = (ids_r == 259).unsqueeze(-1)
                h = emb.register_forward_hook(lambda m, i, o: torch.where(is_pseudo, w.unsqueeze(1).to(o.dtype), o))
                try:
                    e_r = model(input_ids=ids_r).text_embeds
                finally:
                    h.remove()
            loss = nn.functional.mse_loss(e_r.float(), e.float())
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sync()
            if s > 0:
                times.append(time.perf_counter() - t)
        res[key] = b / statistics.median(times)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
