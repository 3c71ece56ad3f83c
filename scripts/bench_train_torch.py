#!/usr/bin/env python3
"""The PyTorch/transformers side of `lincir bench train`: the same SMP training step (frozen CLIP
text tower, phi, pseudo word injected at id 259, MSE, AdamW), the same synthetic captions and
batch size, f32 on the CPU, with the captions padded to 77 tokens as the original code does (and,
for a like-for-like number, padded to the batch's longest). Prints JSON with samples/s.

    python3 scripts/bench_train_torch.py MODEL_DIR [--batch-size 16] [--steps 6]
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path

import torch
import torch.nn as nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from bench_encode_torch import synthetic_captions  # noqa: E402

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
    args = ap.parse_args()
    threads = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count()))
    torch.set_num_threads(threads)
    model = CLIPTextModelWithProjection.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(args.model)
    tok.add_special_tokens({"additional_special_tokens": [PLACEHOLDER]})
    pid = tok.convert_tokens_to_ids(PLACEHOLDER)
    P, W = model.config.projection_dim, model.config.hidden_size
    phi = nn.Sequential(nn.Linear(P, 4 * P), nn.GELU(), nn.Dropout(0.5), nn.Linear(4 * P, 4 * P), nn.GELU(),
                        nn.Dropout(0.5), nn.Linear(4 * P, W)).train()
    opt = torch.optim.AdamW(phi.parameters(), lr=1e-4, weight_decay=0.01)
    b = args.batch_size
    caps = synthetic_captions(b * (args.steps + 1), 1)
    emb = model.text_model.embeddings.token_embedding
    res = {"tool": "transformers " + __import__("transformers").__version__ + ", torch " + torch.__version__,
           "threads": threads, "batch_size": b}
    for padding, key in (("max_length", "samples_per_s_padded_to_77"), ("longest", "samples_per_s")):
        times = []
        for s in range(args.steps + 1):
            batch = caps[s * b:(s + 1) * b]
            t = time.perf_counter()
            ids_c = tok(batch, padding=padding, max_length=77, truncation=True, return_tensors="pt").input_ids
            ids_r = tok([mask(c) for c in batch], padding=padding, max_length=77, truncation=True,
                        return_tensors="pt").input_ids
            ids_r = torch.where(ids_r == pid, torch.tensor(259), ids_r)
            with torch.no_grad():
                e = model(input_ids=ids_c).text_embeds
            x = e + torch.rand(b, 1) * torch.randn(b, P)
            w = phi(x)
            is_pseudo = (ids_r == 259).unsqueeze(-1)
            h = emb.register_forward_hook(lambda m, i, o: torch.where(is_pseudo, w.unsqueeze(1), o))
            try:
                e_r = model(input_ids=ids_r).text_embeds
            finally:
                h.remove()
            loss = nn.functional.mse_loss(e_r, e)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if s > 0:
                times.append(time.perf_counter() - t)
        res[key] = b / statistics.median(times)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
