#!/usr/bin/env python3
"""Generates the peer-method parity fixture (committed outputs): SEARLE's and Pic2Word's
checkpoints in their published formats with random weights for the tiny clip-a, and each
method's pseudo words and final query embeddings computed as its published code does
(re-implemented from the descriptions in docs/PEERS.md, with transformers' CLIP; nothing of
lincir). Run from the repository root, in the venv of make_clip_fixtures.py:

    scripts/.venv/bin/python scripts/make_peer_fixtures.py

Writes crates/lincir/tests/fixtures/peers/:
  searle_phi.pt         {'Phi': state_dict} (SEARLE's release format), Linear-GELU-Dropout x2 + Linear
  pic2word.pt           {'epoch', 'state_dict_img2text': {'module.' + key: ...}} (Pic2Word's format)
  unknown.pt            {'state_dict': {...}} of another network (must be refused by name)
  peers.safetensors     image embeddings, pseudo words and query embeddings per method
  peers.json            the captions
"""
import json, sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_clip_fixtures import check_causal  # noqa: E402

FIX = Path("crates/lincir/tests/fixtures")
OUT = FIX / "peers"
CAPTIONS = [
    "is red instead of blue",
    "has two dogs and a cat",
    "costs $ 5 more and is bigger",  # a second `$`: LinCIR replaces it too, SEARLE does not
    "shows the same scene at night",
]


class SearlePhi(nn.Module):
    """SEARLE's `Phi` (src/phi.py): layers = Linear, GELU, Dropout, Linear, GELU, Dropout, Linear."""

    def __init__(self, p, h, w):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(p, h), nn.GELU(), nn.Dropout(0.5), nn.Linear(h, h), nn.GELU(), nn.Dropout(0.5), nn.Linear(h, w))

    def forward(self, x):
        return self.layers(x)


class Im2Text(nn.Module):
    """Pic2Word's `IM2TEXT` (model/model.py): fc_out registered first, then n blocks of
    Linear -> Dropout -> ReLU; forward runs the blocks, then fc_out."""

    def __init__(self, embed_dim, middle_dim, output_dim, n_layer=2):
        super().__init__()
        self.fc_out = nn.Linear(middle_dim, output_dim)
        layers, dim = [], embed_dim
        for _ in range(n_layer):
            layers.append(nn.Sequential(nn.Linear(dim, middle_dim), nn.Dropout(0.1), nn.ReLU()))
            dim = middle_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.fc_out(x)


def encode(model, ids, pseudo, positions):
    """The text tower with the token embedding at `positions` (row, column) replaced by the row's
    pseudo word (a hook on the token embedding, so transformers builds its own causal mask),
    pooled at the end token, projected, L2-normalised: the query as both methods compute it."""
    emb = model.text_model.embeddings.token_embedding

    def hook(_m, _i, out):
        out = out.clone()
        for r, c in positions:
            out[r, c] = pseudo[r].to(out.dtype)
        return out

    h = emb.register_forward_hook(hook)
    try:
        f = model.get_text_features(input_ids=ids)
    finally:
        h.remove()
    f = f if torch.is_tensor(f) else f.pooler_output
    return f / f.norm(dim=-1, keepdim=True)


def main():
    from transformers import CLIPModel, CLIPTokenizer
    OUT.mkdir(parents=True, exist_ok=True)
    tok = CLIPTokenizer(vocab=str(FIX / "bpe/vocab.json"), merges=str(FIX / "bpe/merges.txt"))
    model = CLIPModel.from_pretrained(FIX / "clip-a", dtype=torch.float32).eval()
    check_causal(model)
    P, W = model.config.projection_dim, model.config.text_config.hidden_size
    torch.manual_seed(21)
    searle = SearlePhi(P, 4 * P, W).eval()
    pic2word = Im2Text(P, 32, W).eval()
    torch.save({"Phi": searle.state_dict()}, OUT / "searle_phi.pt")
    torch.save({"epoch": 30, "state_dict_img2text": {"module." + k: v for k, v in pic2word.state_dict().items()}}, OUT / "pic2word.pt")
    torch.save({"state_dict": nn.Linear(P, W).state_dict()}, OUT / "unknown.pt")
    x = torch.randn(len(CAPTIONS), P) * 3.0  # un-normalised image embeddings
    out = {"image_embeddings": x}
    with torch.no_grad():
        # SEARLE: `a photo of $ that {caption}`, only the first 259 of each row replaced.
        ids = tok([f"a photo of $ that {c}" for c in CAPTIONS], padding="max_length", max_length=77, return_tensors="pt").input_ids
        w = searle(x)
        first = [(r, int((row == 259).nonzero()[0])) for r, row in enumerate(ids)]
        out["searle.pseudo"] = w
        out["searle.query"] = encode(model, ids, w, first)
        # LinCIR with the same network: every 259 replaced.
        every = [(r, int(c)) for r, row in enumerate(ids) for c in (row == 259).nonzero().flatten()]
        out["lincir.query"] = encode(model, ids, w, every)
        # Pic2Word: `a photo of * , {caption}`, the position of the first 265 of row 0, every row.
        ids = tok([f"a photo of * , {c}" for c in CAPTIONS], padding="max_length", max_length=77, return_tensors="pt").input_ids
        w = pic2word(x)
        col = int((ids[0] == 265).nonzero()[0])
        out["pic2word.pseudo"] = w
        out["pic2word.query"] = encode(model, ids, w, [(r, col) for r in range(len(CAPTIONS))])
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / "peers.safetensors")
    (OUT / "peers.json").write_text(json.dumps({"captions": CAPTIONS}, indent=1) + "\n")
    print("wrote", OUT, "lincir vs searle on the `$` caption:", float((out["lincir.query"][2] - out["searle.query"][2]).abs().max()))


if __name__ == "__main__":
    main()
