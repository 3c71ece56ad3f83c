#!/usr/bin/env python3
"""Parity fixture of `lincir train-searle`: SEARLE's concept ensemble, OTI steps and phi step
(Baldrati et al., ICCV 2023; miccunifi/SEARLE, described in docs/TRAINING.md, "SEARLE"), written
here from that description with transformers' CLIP:

    concept embedding = normalise(mean_t normalise(text(template_t with " {concept} ")))
    cos(a, b)         = mean_i 1 - a_i.b_i / sqrt((|a_i|^2 + 1e-12)(|b_i|^2 + 1e-12))
    OTI step          = (1 * cos(text(template with w), image)
                         + 0.5 * cos(text(phrase, concept's first occurrence -> w), text(phrase)) * R / B) / 1.5
                        (R of the B images have a phrase: the phrase term divides by the batch)
                        AdamW(lr, wd 0.01) on w; ema = 0.99 ema + 0.01 w
    phi step          = NT-Xent(oti, phi(image), t=0.25)
                        + 0.25 * cos(text(phrase), text(phrase, every concept occurrence -> " $ ",
                                                        the FIRST $ taking phi(image)))
                        AdamW(lr, wd 0.01 on every parameter)

Every random choice (templates, phrases, dropout masks, initial words) is made here and stored, so
the Rust side replays it. One image has no phrase (it gets the template term only) and one phi
phrase names its concept twice (only the first `$` takes the pseudo word).

    scripts/.venv/bin/python scripts/make_searle_fixtures.py   # after make_clip_fixtures.py

Writes crates/lincir/tests/fixtures/searle_step.{json,safetensors}.
"""
import json, sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from make_clip_fixtures import check_causal  # noqa: E402

FIX = Path("crates/lincir/tests/fixtures")
TEMPLATES = ["This is a photo of a {}", "A sketch of a {}", "{}", "We see a {} in this image", "{} photo"]


def features(model, ids):
    out = model.get_text_features(input_ids=ids)
    return out if torch.is_tensor(out) else out.pooler_output


def with_word(model, ids, words):
    """Text features with the token embedding at the FIRST id-259 position of each row replaced."""
    first = (ids == 259).int().cumsum(1).eq(1) & (ids == 259)
    emb = model.text_model.embeddings.token_embedding
    h = emb.register_forward_hook(lambda m, i, o: torch.where(first.unsqueeze(-1), words.unsqueeze(1).to(o.dtype), o))
    try:
        return features(model, ids)
    finally:
        h.remove()


def cos_loss(a, b):
    return nn.CosineEmbeddingLoss()(a, b, torch.ones(a.shape[0]))


def nt_xent(v1, v2, t):
    v1, v2 = F.normalize(v1, dim=1), F.normalize(v2, dim=1)
    num = torch.exp(torch.diag(v1 @ v2.t()) / t)
    num = torch.cat((num, num), 0)
    j = torch.cat((v1, v2), 0)
    p = torch.exp(j @ j.t() / t)
    den = torch.sum(p - p * torch.eye(j.shape[0]), 0)
    return -torch.mean(torch.log(num / den))


class Phi(nn.Module):
    def __init__(self, p, h, w):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(p, h), nn.GELU(), nn.Dropout(0.5), nn.Linear(h, h), nn.GELU(), nn.Dropout(0.5), nn.Linear(h, w))

    def forward(self, x, m1, m2):
        x = F.gelu(self.layers[0](x)) * m1
        x = F.gelu(self.layers[3](x)) * m2
        return self.layers[6](x)


def main():
    from transformers import CLIPModel, CLIPTokenizer
    tok = CLIPTokenizer(vocab=str(FIX / "bpe/vocab.json"), merges=str(FIX / "bpe/merges.txt"))
    model = CLIPModel.from_pretrained(FIX / "clip-a", dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    check_causal(model)
    P, W = model.config.projection_dim, model.config.text_config.hidden_size
    ids = lambda texts: tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    out, meta = {}, {}

    # Concept ensembles.
    concepts = ["red square", "dog", "traffic light"]
    ens = []
    for c in concepts:
        f = features(model, ids([t.format(f" {c} ") for t in ALL_TEMPLATES]))
        f = f / f.norm(dim=-1, keepdim=True)
        m = f.mean(0)
        ens.append(m / m.norm())
    out["concepts"] = torch.stack(ens)
    meta["concepts"] = concepts

    # OTI: 4 images, 6 steps; image 2 has no phrase.
    g = torch.Generator().manual_seed(23)
    B, steps, lr = 4, 6, 2e-2
    image = torch.randn(B, P, generator=g)
    start = torch.randn(B, W, generator=g) * 0.02
    pairs = [("dog", "a photo of dog that runs on the grass"), ("red square", "a photo of red square that sits next to a red square"),
             None, ("traffic light", "a photo of traffic light that is green")]
    choices = []
    for s in range(steps):
        tpl = [TEMPLATES[int(torch.randint(len(TEMPLATES), (1,), generator=g))] for _ in range(B)]
        choices.append({"templates": tpl, "phrases": pairs})
    words = nn.Parameter(start.clone())
    ema = words.detach().clone()
    opt = torch.optim.AdamW([words], lr=lr, weight_decay=0.01)
    losses = []
    rows = [i for i, p in enumerate(pairs) if p is not None]
    for s in range(steps):
        opt.zero_grad()
        t = choices[s]["templates"]
        tf = with_word(model, ids([x.format(" $ ") for x in t]), words)
        cosine = cos_loss(tf, image)
        chosen = [pairs[i] for i in rows]
        rep = ids([p.replace(c, " $ ", 1) for c, p in chosen])
        reg = features(model, ids([p for _, p in chosen]))
        # lincir's rule for an image without a phrase (SEARLE's code has none): the phrase term
        # sums over the images with one and divides by the batch size.
        gpt = cos_loss(with_word(model, rep, words[rows]), reg) * len(rows) / B
        loss = (1.0 * cosine + 0.5 * gpt) / 1.5
        loss.backward()
        if s == 0:
            out["oti.grad"] = words.grad.detach().clone()
        losses.append(loss.item())
        opt.step()
        ema = 0.99 * ema + 0.01 * words.detach()
    out.update({"oti.image": image, "oti.start": start, "oti.final": words.detach(), "oti.ema": ema})
    meta["oti"] = {"steps": steps, "lr": lr, "choices": choices, "losses": losses}

    # phi: 4 images, 3 steps; image 1 has no phrase, image 3's phrase names its concept twice.
    torch.manual_seed(9)
    H, lr_phi, T = 32, 1e-3, 0.25
    phi = Phi(P, H, W)
    out.update({f"phi.init.{k}": v.detach().clone() for k, v in phi.state_dict().items()})
    image = torch.randn(B, P, generator=g) * 2.0
    oti = torch.randn(B, W, generator=g) * 0.3
    masks = (torch.rand(3, 2, B, H, generator=g) >= 0.5).float() * 2.0
    pairs = [("dog", "a photo of dog that runs"), None, ("red square", "a photo of red square that is small"),
             ("star", "a photo of star that sits on a star")]
    rows = [i for i, p in enumerate(pairs) if p is not None]
    opt = torch.optim.AdamW(phi.parameters(), lr=lr_phi, weight_decay=0.01)
    losses = []
    for s in range(3):
        opt.zero_grad()
        pred = phi(image, masks[s, 0], masks[s, 1])
        distil = nt_xent(oti, pred, T)
        chosen = [pairs[i] for i in rows]
        reg = features(model, ids([p for _, p in chosen]))
        rep = ids([p.replace(c, " $ ") for c, p in chosen])
        assert (rep == 259).sum(1).tolist() == [1, 1, 2]
        gpt = cos_loss(reg, with_word(model, rep, pred[rows]))
        loss = 1.0 * distil + 0.25 * gpt
        loss.backward()
        if s == 0:
            out.update({f"phi.grad.{k}": p.grad.detach().clone() for k, p in phi.named_parameters()})
            meta["phi_first"] = {"distillation": distil.item(), "gpt": gpt.item()}
        losses.append(loss.item())
        opt.step()
    out.update({f"phi.final.{k}": v.detach().clone() for k, v in phi.state_dict().items()})
    out.update({"phi.image": image, "phi.oti": oti, "phi.masks": masks})
    meta["phi"] = {"lr": lr_phi, "temperature": T, "hidden": H, "pairs": pairs, "losses": losses}

    save_file({k: v.contiguous().float() for k, v in out.items()}, FIX / "searle_step.safetensors")
    (FIX / "searle_step.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("oti loss", meta["oti"]["losses"][0], "->", meta["oti"]["losses"][-1], "; phi", meta["phi"]["losses"])


ALL_TEMPLATES = [
    "This is a photo of a {}", "This photo contains a {}", "A photo of a {}", "This is an illustration of a {}",
    "This illustration contains a {}", "An illustrations of a {}", "This is a sketch of a {}", "This sketch contains a {}",
    "A sketch of a {}", "This is a diagram of a {}", "This diagram contains a {}", "A diagram of a {}", "A {}",
    "We see a {}", "{}", "We see a {} in this photo", "We see a {} in this image", "We see a {} in this illustration",
    "We see a {} photo", "We see a {} image", "We see a {} illustration", "{} photo", "{} image", "{} illustration",
]

if __name__ == "__main__":
    main()
