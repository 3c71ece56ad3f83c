#!/usr/bin/env python3
"""Generates the CLIP parity fixtures of lincir's default test suite (committed outputs).

Reference: Hugging Face transformers (CLIPModel, CLIPTokenizer, CLIPImageProcessorPil, i.e. PIL),
never lincir itself. Run from the repository root:

    python3 -m venv scripts/.venv && scripts/.venv/bin/pip install torch transformers \
        open_clip_torch scikit-image pillow safetensors numpy
    scripts/.venv/bin/python scripts/make_clip_fixtures.py [--shared ../shared]

Writes crates/lincir/tests/fixtures/:
  bpe/vocab.json, bpe/merges.txt      CLIP's BPE (from open_clip's bpe_simple_vocab_16e6.txt.gz)
  tokenizer_cases.jsonl               strings and transformers' ids (truncation=True, max_length=77)
  clip-a/                             tiny CLIP, quick_gelu, real vocabulary, f16 model.safetensors
  clip-b/                             tiny CLIP, gelu, eps 1e-6, f32 sharded safetensors + index
  clip-b-pth/                         clip-b as pytorch_model.bin (zip/pickle)
  expected_clip-{a,b}.safetensors     inputs and transformers' outputs (embeddings, gradients)
  images/*                            photographs (scikit-image) in many formats and modes
  expected_pixels.safetensors         CLIPImageProcessorPil's pixels for each image
"""
import argparse, gzip, html, io, json, os, random, string, sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

OUT = Path("crates/lincir/tests/fixtures")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_bpe():
    import open_clip
    gz = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(gz).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    d = OUT / "bpe"
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}, ensure_ascii=False))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return d


def tokenizer_strings(shared):
    rng = random.Random(0)
    out = []
    # Real captions when the shared benchmarks are at hand.
    if shared:
        cirr = json.load(open(Path(shared) / "benchmarks/CIRR/cirr/captions/cap.rc2.val.json"))
        out += [r["caption"] for r in cirr[:1500]]
        caps = (Path(shared) / "shapes/captions.txt").read_text().splitlines()
        out += rng.sample(caps, 300)
    alphabet = string.ascii_letters + string.digits + string.punctuation + "  \t\n" + "éèàüößñçÅØæœ" + "日本語中文한국어" + "😀🐶🚗👍🏽" + "ﬁ½²€£¥©®™—–…‘’“”" + "\u00a0\u200b\u0301"
    words = "a photo of $ that is red and has two dogs the man on beach at sunset it's don't we're I'll they've".split()
    for i in range(1400):
        kind = i % 7
        if kind == 0:
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        elif kind == 1:
            s = " ".join(rng.choice(words) for _ in range(rng.randint(1, 15)))
        elif kind == 2:
            s = " ".join(rng.choice(words) for _ in range(rng.randint(60, 120)))  # longer than 77 tokens
        elif kind == 3:
            s = rng.choice(["$", " $ ", "$$", "$5", "a $ b", "[$]", "$-", "US$", "a photo of $ that " + rng.choice(words)])
        elif kind == 4:
            s = "".join(rng.choice(string.punctuation) for _ in range(rng.randint(1, 30)))
        elif kind == 5:
            s = rng.choice(["<|endoftext|>", "hello <|startoftext|> world", "A  B\t\tC\n\nD", "", "   ", "UPPER lower MiXeD", "x" * 300])
        else:
            s = "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 20)))
        out.append(s)
    return out


def write_tokenizer_cases(bpe_dir, shared):
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer(vocab=str(bpe_dir / "vocab.json"), merges=str(bpe_dir / "merges.txt"))
    strings = tokenizer_strings(shared)
    with open(OUT / "tokenizer_cases.jsonl", "w") as f:
        for s in strings:
            ids = tok(s, truncation=True, max_length=77)["input_ids"]
            f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False) + "\n")
    assert tok("$", add_special_tokens=False)["input_ids"] == [259]
    print(f"tokenizer: {len(strings)} cases")
    return tok


def tiny_clip(cfg_kwargs, seed):
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(seed)
    cfg = CLIPConfig(**cfg_kwargs)
    model = CLIPModel(cfg).eval()
    # Larger-than-default random weights so that every op shapes the output.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 0:  # logit_scale
                continue
            if "layer_norm" in name or "layrnorm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else p.shape[0]
                std = 0.5 / (fan_in ** 0.5) if "embedding" not in name else 0.3
                p.copy_(std * torch.randn_like(p))
    return model, cfg


def check_causal(model):
    """Fails unless the installed transformers' text encoder is causal: the state at a position
    must not depend on later tokens. (A harness that passed its own mask to an API that silently
    ignored it once made the official code look three times worse than it is: docs/TRAINING.md.)"""
    text_model = model.text_model if hasattr(model, "text_model") else model
    dev = next(text_model.parameters()).device
    a = torch.tensor([[49406, 320, 1125, 539, 49407]], device=dev)
    b = torch.tensor([[49406, 320, 2368, 2692, 49407]], device=dev)
    with torch.no_grad():
        ha = text_model(input_ids=a).last_hidden_state[0, :2]
        hb = text_model(input_ids=b).last_hidden_state[0, :2]
    assert torch.allclose(ha, hb, atol=1e-5), "the text encoder is not causal with this transformers version"


def pseudo_reference(model, ids, pseudo):
    """transformers' text model with the token embedding at every id-259 position replaced."""
    emb = model.text_model.embeddings.token_embedding
    mask = (ids == 259).unsqueeze(-1)
    h = emb.register_forward_hook(lambda m, i, o: torch.where(mask, pseudo.unsqueeze(1).to(o.dtype), o))
    try:
        out = model.get_text_features(input_ids=ids)
    finally:
        h.remove()
    return out if torch.is_tensor(out) else out.pooler_output


def text_features(model, ids):
    out = model.get_text_features(input_ids=ids)
    return out if torch.is_tensor(out) else out.pooler_output


def image_features(model, px):
    out = model.get_image_features(pixel_values=px)
    return out if torch.is_tensor(out) else out.pooler_output


def make_model_fixture(name, cfg_kwargs, seed, eot, vocab, dtype_store, sharded, pth_copy):
    model, cfg = tiny_clip(cfg_kwargs, seed)
    if dtype_store == "f16":
        with torch.no_grad():  # the reference computes with exactly the stored (rounded) weights
            for p in model.parameters():
                p.copy_(p.half().float())
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    cfg_dict = cfg.to_dict()
    for k in ("text_config", "vision_config"):
        cfg_dict[k]["projection_dim"] = cfg.projection_dim
    (d / "config.json").write_text(json.dumps(cfg_dict, indent=2, default=str))
    vs = cfg.vision_config.image_size
    (d / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": vs, "width": vs}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": vs}}, indent=2))
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    store = {k: (v.half() if dtype_store == "f16" else v) for k, v in sd.items()}
    if sharded:
        keys = sorted(store)
        half = len(keys) // 2
        shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
        weight_map = {}
        for fname, ks in shards.items():
            save_file({k: store[k] for k in ks}, str(d / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in ks})
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    else:
        save_file(store, str(d / "model.safetensors"), metadata={"format": "pt"})
    if pth_copy:
        pd = OUT / pth_copy
        pd.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "preprocessor_config.json"):
            (pd / f).write_text((d / f).read_text())
        torch.save(sd, pd / "pytorch_model.bin")

    g = torch.Generator().manual_seed(seed + 1)
    W = cfg.text_config.hidden_size

    def rand_ids(n):
        return torch.randint(1, min(vocab, 49406), (n,), generator=g).clamp(max=eot - 1)

    exp = {}
    # 1. unpadded batch: 3 sentences of length 9
    ids = torch.stack([torch.cat([torch.tensor([min(49406, eot - 1)]), rand_ids(7), torch.tensor([eot])]) for _ in range(3)])
    exp["unpadded_ids"] = ids.to(torch.int64)
    exp["unpadded_text"] = text_features(model, ids)
    # 2. padded batch: lengths 5, 12, 20, each computed alone; ids padded with 0
    lens = [5, 12, 20]
    seqs = [torch.cat([rand_ids(n - 1), torch.tensor([eot])]) for n in lens]
    alone = torch.cat([text_features(model, s.unsqueeze(0)) for s in seqs])
    padded = torch.zeros(3, 20, dtype=torch.int64)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    exp["padded_ids"] = padded
    exp["padded_text"] = alone
    # 3. pseudo word at one position (padded batch) and at several positions
    one = padded.clone()
    one[0, 2] = 259; one[1, 4] = 259; one[2, 1] = 259
    several = padded.clone()
    several[0, 1] = 259; several[0, 3] = 259; several[1, 2] = 259; several[1, 9] = 259; several[1, 10] = 259; several[2, 5] = 259
    for key, ids_p in (("pseudo_one", one), ("pseudo_several", several)):
        pseudo = (0.3 * torch.randn(3, W, generator=g)).requires_grad_(True)
        # each sentence computed at its own length (no padding at all in the reference)
        outs = torch.cat([pseudo_reference(model, ids_p[i : i + 1, : lens[i]], pseudo[i : i + 1]) for i in range(3)])
        weights = torch.randn(outs.shape, generator=g)
        (outs * weights).sum().backward()
        exp[f"{key}_ids"] = ids_p
        exp[f"{key}_words"] = pseudo.detach()
        exp[f"{key}_text"] = outs.detach()
        exp[f"{key}_loss_weights"] = weights
        exp[f"{key}_grad"] = pseudo.grad.detach()
    # 4. images
    px = torch.randn(2, 3, vs, vs, generator=g)
    exp["pixels"] = px
    exp["image"] = image_features(model, px)
    exp = {k: v.detach().contiguous() for k, v in exp.items()}
    save_file(exp, str(OUT / f"expected_{name}.safetensors"))
    print(f"{name}: text width {W}, projection {cfg.projection_dim}, act {cfg.text_config.hidden_act}")


def write_images():
    import skimage.data as data
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    d = OUT / "images"
    d.mkdir(parents=True, exist_ok=True)
    astronaut, coffee, chelsea, rocket, camera = data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera()
    files = {}

    def save(name, img, **kw):
        img.save(d / name, **kw)
        files[name] = d / name

    save("astronaut_512x512.jpg", Image.fromarray(astronaut), quality=90)
    save("coffee_400x600.webp", Image.fromarray(coffee), quality=85)
    save("rocket_427x640.jpg", Image.fromarray(rocket), quality=85)
    save("camera_gray_256.png", Image.fromarray(camera).resize((256, 256), Image.BICUBIC))
    small = Image.fromarray(chelsea).crop((100, 50, 220, 140))  # 120x90: upsampled to 224
    save("chelsea_small_120x90.png", small)
    rgba = Image.fromarray(chelsea).resize((225, 150), Image.BICUBIC).convert("RGBA")
    a = np.array(rgba); a[..., 3] = np.tile(np.linspace(0, 255, a.shape[1]).astype(np.uint8), (a.shape[0], 1)); a[:20, :, 3] = 0
    save("chelsea_rgba_225x150.png", Image.fromarray(a, "RGBA"))
    save("chelsea_palette.png", Image.fromarray(chelsea).resize((160, 107), Image.BICUBIC).quantize(64))
    pan = Image.fromarray(rocket).crop((0, 300, 427, 380))  # 427x80 panorama
    save("rocket_panorama_427x80.png", pan)
    g16 = (np.array(Image.fromarray(camera).resize((128, 96), Image.BICUBIC)).astype(np.uint16) * 257 + 3)
    save("camera_gray16_128x96.png", Image.fromarray(g16))
    exif = Image.Exif(); exif[0x0112] = 6  # orientation: rotate 90 CW to display
    save("coffee_exif_rotated.jpg", Image.fromarray(coffee).resize((300, 200), Image.BICUBIC), quality=90, exif=exif.tobytes())

    proc = CLIPImageProcessorPil()
    assert proc.crop_size["height"] == 224
    mean = np.array(proc.image_mean, dtype=np.float64)[:, None, None]
    std = np.array(proc.image_std, dtype=np.float64)[:, None, None]
    exp = {}
    for name, path in sorted(files.items()):
        img = ImageOps.exif_transpose(Image.open(path))  # as transformers.image_utils.load_image
        if img.mode == "I;16":
            # Pillow clips 16-bit grey to 255 when converting; lincir keeps the high byte instead
            # (docs/PREPROCESSING.md), so the reference gets that 8-bit image.
            img = Image.fromarray((np.array(img) >> 8).astype(np.uint8))
        px = proc(images=img, return_tensors="np")["pixel_values"][0].astype(np.float64)
        u8 = np.round((px * std + mean) * 255)
        assert np.abs((u8 / 255 - mean) / std - px).max() < 1e-4, name  # pixels are exact 8-bit values
        exp[name] = torch.from_numpy(u8.astype(np.uint8))
    save_file(exp, str(OUT / "expected_pixels.safetensors"))
    print(f"images: {len(files)}")


def write_shapes_reference(shared):
    """transformers on the shapes CLIP (../shared/shapes/clip): used by the shared test suite."""
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    d = Path(shared) / "shapes"
    model = CLIPModel.from_pretrained(d / "clip").eval()
    tok = CLIPTokenizer.from_pretrained(d / "clip")
    proc = CLIPImageProcessorPil.from_pretrained(d / "clip")
    texts = (d / "captions.txt").read_text().splitlines()[:6] + ["a photo of $ that is red", "a large green pentagon on cyan"]
    images = sorted(os.listdir(d / "bench/dev"))[::97][:6]
    with torch.no_grad():
        enc = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        t = text_features(model, enc["input_ids"])
        px = proc(images=[Image.open(d / "bench/dev" / n) for n in images], return_tensors="pt")["pixel_values"]
        i = image_features(model, px)
    save_file({"text": t.contiguous(), "image": i.contiguous()}, str(OUT / "expected_shapes.safetensors"),
              metadata={"texts": json.dumps(texts), "images": json.dumps(images)})
    print(f"shapes: {len(texts)} texts, {len(images)} images")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared", help="the shared folder (captions for tokenizer cases)")
    args = ap.parse_args()
    shared = args.shared if Path(args.shared).is_dir() else None
    torch.set_grad_enabled(True)
    bpe = write_bpe()
    write_tokenizer_cases(bpe, shared)
    common_v = dict(num_channels=3)
    make_model_fixture(
        "clip-a",
        dict(projection_dim=16,
             text_config=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                              hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77,
                              eos_token_id=49407, bos_token_id=49406, pad_token_id=1),
             vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                hidden_act="quick_gelu", image_size=32, patch_size=8, **common_v)),
        seed=1, eot=49407, vocab=49408, dtype_store="f16", sharded=False, pth_copy=None)
    make_model_fixture(
        "clip-b",
        dict(projection_dim=40,
             text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=3,
                              hidden_act="gelu", layer_norm_eps=1e-6, vocab_size=1000, max_position_embeddings=77,
                              eos_token_id=999, bos_token_id=998, pad_token_id=1),
             vision_config=dict(hidden_size=40, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                hidden_act="gelu", layer_norm_eps=1e-6, image_size=28, patch_size=14, **common_v)),
        seed=2, eot=999, vocab=1000, dtype_store="f32", sharded=True, pth_copy="clip-b-pth")
    write_images()
    if shared:
        write_shapes_reference(shared)


if __name__ == "__main__":
    main()
