#!/usr/bin/env python3
"""Parity fixture of `lincir train-pic2word`: Pic2Word's training step (Saito et al., CVPR 2023;
google-research/composed_image_retrieval, described in docs/PEERS.md and docs/TRAINING.md),
written here from that description with transformers' CLIP:

    v    = CLIP image embedding (frozen, un-normalised)
    w    = IM2TEXT(v)          (Linear -> Dropout -> ReLU) x 2, then fc_out
    t    = text embedding of "a photo of w" (w in the token position after "of", before the end)
    loss = (CE(s vn tn^T, I) + CE(s tn vn^T, I)) / 2, vn, tn L2-normalised, s = exp(logit_scale)
    AdamW on IM2TEXT only; biases without weight decay (Pic2Word's parameter groups)

The dropout masks are drawn here and stored, so the Rust side replays them.

    scripts/.venv/bin/python scripts/make_pic2word_fixtures.py   # after make_clip_fixtures.py

Writes crates/lincir/tests/fixtures/pic2word_step.{json,safetensors}.
"""
import json, sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_clip_fixtures import check_causal, pseudo_reference  # noqa: E402

FIX = Path("crates/lincir/tests/fixtures")


class Im2Text(nn.Module):
    def __init__(self, p, h, w, layers):
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(p if i == 0 else h, h), nn.Dropout(0.1), nn.ReLU()) for i in range(layers)])
        self.fc_out = nn.Linear(h, w)

    def forward(self, x, masks):
        for block, mask in zip(self.layers, masks):
            x = torch.relu(block[0](x) * mask)  # dropout as the stored inverted mask
        return self.fc_out(x)


def main():
    from transformers import CLIPModel, CLIPTokenizer
    tok = CLIPTokenizer(vocab=str(FIX / "bpe/vocab.json"), merges=str(FIX / "bpe/merges.txt"))
    model = CLIPModel.from_pretrained(FIX / "clip-a", dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    check_causal(model)
    P, W = model.config.projection_dim, model.config.text_config.hidden_size
    H, layers, B, p_drop = 32, 2, 8, 0.1
    ids = tok(["a photo of $"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids[0, 4].item() == 259 and ids[0, 5].item() == 49407, ids[0, :8]
    ids = ids.repeat(B, 1)

    torch.manual_seed(5)
    net = Im2Text(P, H, W, layers)
    init = {f"init.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(17)
    steps, lr, wd = 10, 1e-3, 0.1
    v = torch.randn(B, P, generator=g) * 2.0
    keep = 1.0 / (1.0 - p_drop)
    masks = (torch.rand(steps, layers, B, H, generator=g) >= p_drop).float() * keep
    scale = model.logit_scale.exp()

    decay = [p for n, p in net.named_parameters() if "bias" not in n]
    no_decay = [p for n, p in net.named_parameters() if "bias" in n]
    opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": wd}], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    out, losses = {}, []
    target = torch.arange(B)
    for s in range(steps):
        w = net(v, masks[s])
        t = pseudo_reference(model, ids, w)
        vn, tn = v / v.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
        loss = (nn.functional.cross_entropy(scale * vn @ tn.t(), target) + nn.functional.cross_entropy(scale * tn @ vn.t(), target)) / 2
        opt.zero_grad()
        loss.backward()
        if s == 0:
            out.update({f"grad.{k}": p.grad.detach().clone() for k, p in net.named_parameters()})
            out["first_text"] = t.detach()
        losses.append(loss.item())
        opt.step()
    out.update(init)
    out.update({f"final.{k}": p.detach().clone() for k, p in net.state_dict().items()})
    out.update({"image_embeds": v, "masks": masks})
    save_file({k: val.contiguous().float() for k, val in out.items()}, FIX / "pic2word_step.safetensors")
    meta = {"steps": steps, "lr": lr, "weight_decay": wd, "dropout": p_drop, "hidden": H, "layers": layers,
            "logit_scale": model.logit_scale.item(), "ids": ids[0].tolist(), "losses": losses}
    (FIX / "pic2word_step.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("loss", losses[0], "->", losses[-1])


if __name__ == "__main__":
    main()
