#!/usr/bin/env python3
"""Generates the training-step parity fixture of lincir's default test suite (committed outputs).

A PyTorch implementation of one self-masking-projection (SMP) step, written from the
specification (../shared/docs/LINCIR.md, sections "phi" and "SMP"), not from the original code:

    e   = CLIP text embedding of the caption c (frozen, no gradient; padded to 77 as the original)
    x   = e + u * n              u ~ U(0,1) one scalar per caption, n ~ N(0, I)
    w   = phi(x)                 Linear-GELU-Dropout-Linear-GELU-Dropout-Linear
    e_r = text embedding of the masked caption r with every id 259 replaced by w
    loss = mse(e_r, e)           AdamW on phi only, torch.nn.utils.clip_grad_norm_

Randomness (u, n, the dropout masks) is drawn here and stored, so the Rust side replays it.
Also writes phi's initial weights as the official checkpoint format
(torch.save({'epoch': n, 'Phi': state_dict})) to test the importer.

Run from the repository root (same venv as make_clip_fixtures.py, which must have run first):

    scripts/.venv/bin/python scripts/make_smp_fixtures.py [--device cuda] [--out DIR]

`--device cuda --out DIR` runs the same step on a GPU (scripts/gpu_check.sh) and writes the
fixture to DIR instead (inputs are drawn on the CPU first, so they are the same as here).

Writes crates/lincir/tests/fixtures/:
  smp_step.json             captions, keywords, masked captions, token ids, hyper-parameters
  smp_step.safetensors      phi weights (initial, after 20 steps), noise, masks, loss, gradients
  phi_official.pt           the initial phi in the official checkpoint format
"""
import json, sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_clip_fixtures import check_causal, pseudo_reference, text_features  # noqa: E402

FIX = Path("crates/lincir/tests/fixtures")
PLACEHOLDER = "[$]"

# (cleaned caption, its keywords, the word index picked by the random fallback when it is needed)
CASES = [
    ("a man riding a brown horse on the beach at sunset", ["a man", "a brown horse", "the beach", "sunset"], 0),
    ("two dogs playing in the snow", ["dogs", "the snow"], 0),
    ("is red and has two of them", [], 1),            # no keyword: random word
    ("a cat sitting on a concatenated list", ["a cat", "a concatenated list"], 0),
    ("running quickly", ["sprinting"], 0),            # keyword absent from c: random word, stop
    ("the pentagon that is black", ["the pentagon"], 0),
]


def mask_caption(c, keywords, pick):
    """Spec step 3: plain substring replacement; random-word fallback; then stop."""
    r = c
    for k in keywords:
        if k and k in c:
            r = r.replace(k, PLACEHOLDER)
        else:
            words = c.split(" ")
            r = r.replace(words[pick], PLACEHOLDER)
            break
    else:
        if not keywords:
            words = c.split(" ")
            r = r.replace(words[pick], PLACEHOLDER)
    return r


class Phi(nn.Module):
    """The spec's phi; the Sequential is named `layers`, giving the official keys layers.{0,3,6}."""

    def __init__(self, p, h, w):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(p, h), nn.GELU(), nn.Dropout(0.5), nn.Linear(h, h), nn.GELU(),
                                    nn.Dropout(0.5), nn.Linear(h, w))


def make_phi(p, h, w, seed):
    torch.manual_seed(seed)
    return Phi(p, h, w)


def phi_forward(phi, x, m1, m2):
    """phi with explicit dropout masks (0 or 1/(1-p)), so Rust can replay the same ones."""
    layers = phi.layers
    h = nn.functional.gelu(layers[0](x)) * m1
    h = nn.functional.gelu(layers[3](h)) * m2
    return layers[6](h)


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(FIX))
    args = ap.parse_args()
    dev, out_dir = torch.device(args.device), Path(args.out)
    # The reference in f32 as written: no TF32 products on a GPU (PyTorch's matmul default, made
    # explicit; cuDNN's default is TF32).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    out_dir.mkdir(parents=True, exist_ok=True)
    from transformers import CLIPModel, CLIPTokenizer
    tok = CLIPTokenizer(vocab=str(FIX / "bpe/vocab.json"), merges=str(FIX / "bpe/merges.txt"))
    tok.add_special_tokens({"additional_special_tokens": [PLACEHOLDER]})
    placeholder_id = tok.convert_tokens_to_ids(PLACEHOLDER)
    model = CLIPModel.from_pretrained(FIX / "clip-a", dtype=torch.float32).to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    check_causal(model)

    caps = [c for c, _, _ in CASES]
    masked = [mask_caption(c, k, i) for c, k, i in CASES]

    def ids77(texts):
        ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return torch.where(ids == placeholder_id, torch.tensor(259), ids)

    ids_c, ids_r = ids77(caps).to(dev), ids77(masked).to(dev)
    B, P = len(caps), model.config.projection_dim
    W = model.config.text_config.hidden_size
    H = 4 * P
    with torch.no_grad():
        e = text_features(model, ids_c)

    phi = make_phi(P, H, W, seed=7)
    init = {f"init.{k}": v.detach().clone() for k, v in phi.state_dict().items()}
    torch.save({"epoch": 3, "Phi": phi.state_dict()}, out_dir / "phi_official.pt")
    phi = phi.to(dev)

    steps, lr, wd, max_norm, p_drop = 20, 1e-3, 0.01, 0.05, 0.5
    g = torch.Generator().manual_seed(11)
    u = torch.rand(steps, B, 1, generator=g)
    n = torch.randn(steps, B, P, generator=g)
    keep = 1.0 / (1.0 - p_drop)
    m1 = (torch.rand(steps, B, H, generator=g) >= p_drop).float() * keep
    m2 = (torch.rand(steps, B, H, generator=g) >= p_drop).float() * keep
    u, n, m1, m2 = (t.to(dev) for t in (u, n, m1, m2))

    opt = torch.optim.AdamW(phi.parameters(), lr=lr, weight_decay=wd, betas=(0.9, 0.999), eps=1e-8)
    out = {}
    losses = []
    for s in range(steps):
        x = e + u[s] * n[s]
        w = phi_forward(phi, x, m1[s], m2[s])
        e_r = pseudo_reference(model, ids_r, w)
        loss = nn.functional.mse_loss(e_r, e)
        opt.zero_grad()
        loss.backward()
        if s == 0:
            out.update({f"grad.{k}": p.grad.detach().clone() for k, p in phi.named_parameters()})
            out["first_loss"] = loss.detach().reshape(1)
            out["first_e_r"] = e_r.detach()
        norm = torch.nn.utils.clip_grad_norm_(phi.parameters(), max_norm)
        losses.append([loss.item(), norm.item()])
        opt.step()

    out.update(init)
    out.update({f"final.{k}": v.detach().clone() for k, v in phi.state_dict().items()})
    out.update({"target": e, "u": u.squeeze(-1), "n": n, "mask1": m1, "mask2": m2})
    save_file({k: v.detach().cpu().contiguous().float() for k, v in out.items()}, out_dir / "smp_step.safetensors")
    meta = {
        "captions": caps, "keywords": [k for _, k, _ in CASES], "picks": [i for _, _, i in CASES],
        "masked": masked, "ids_c": ids_c.tolist(), "ids_r": ids_r.tolist(), "device": str(dev),
        "steps": steps, "lr": lr, "weight_decay": wd, "max_grad_norm": max_norm, "dropout": p_drop,
        "losses_and_grad_norms": losses,
    }
    (out_dir / "smp_step.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("loss", losses[0], "->", losses[-1])


if __name__ == "__main__":
    main()
