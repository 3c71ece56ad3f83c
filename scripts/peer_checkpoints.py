#!/usr/bin/env python3
"""Makes SEARLE- and Pic2Word-format checkpoints for a CLIP whose published checkpoints do not
exist (the shapes world), from a phi trained by lincir, so that the three methods can be compared
in one `lincir eval` (scripts/peers_on_shapes.sh). Neither method's own training objective is run:

- SEARLE format: the trained phi's weights as SEARLE releases them, `{'Phi': state_dict}` (same
  architecture; only the query rule differs: SEARLE replaces the first `$` only);
- Pic2Word format: an IM2TEXT (Linear-Dropout-ReLU x2, fc_out; middle 512) fitted by regression to
  the trained phi's pseudo words on the given image embeddings (MSE, Adam), saved as Pic2Word does,
  `{'epoch', 'state_dict_img2text': {'module.' + key}}`.

    python3 scripts/peer_checkpoints.py PHI.safetensors EMBEDDINGS.safetensors OUT_DIR [--steps 3000]
"""
import argparse
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phi")
    ap.add_argument("embeddings", help="lincir embed output: tensor `embeddings` [N, P]")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sd = load_file(args.phi)
    torch.save({"Phi": sd}, out / "searle_phi.pt")

    P, H = sd["layers.0.weight"].shape[1], sd["layers.0.weight"].shape[0]
    W = sd["layers.6.weight"].shape[0]
    phi = nn.Sequential(nn.Linear(P, H), nn.GELU(), nn.Dropout(0.0), nn.Linear(H, H), nn.GELU(), nn.Dropout(0.0), nn.Linear(H, W))
    phi.load_state_dict({k.removeprefix("layers."): v for k, v in sd.items()})
    phi.eval()
    x = load_file(args.embeddings)["embeddings"].float()

    class Im2Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_out = nn.Linear(512, W)
            self.layers = nn.Sequential(nn.Sequential(nn.Linear(P, 512), nn.Dropout(0.1), nn.ReLU()),
                                        nn.Sequential(nn.Linear(512, 512), nn.Dropout(0.1), nn.ReLU()))

        def forward(self, v):
            return self.fc_out(self.layers(v))

    torch.manual_seed(0)
    m = Im2Text()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for step in range(args.steps):
        idx = torch.randint(0, len(x), (256,))
        xb = x[idx]
        xb = xb + 0.1 * torch.rand(256, 1) * torch.randn(256, P) * xb.norm(dim=-1, keepdim=True) / P ** 0.5
        with torch.no_grad():
            target = phi(xb)
        loss = nn.functional.mse_loss(m(xb), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        rel = ((m(x) - phi(x)).norm() / phi(x).norm()).item()
    torch.save({"epoch": args.steps, "state_dict_img2text": {"module." + k: v for k, v in m.state_dict().items()}}, out / "pic2word.pt")
    print(f"wrote {out}/searle_phi.pt and {out}/pic2word.pt (IM2TEXT fit: relative error {rel:.3f} on {len(x)} embeddings)")


if __name__ == "__main__":
    main()
