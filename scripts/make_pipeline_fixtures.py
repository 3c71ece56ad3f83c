#!/usr/bin/env python3
"""The image transforms of the methods `lincir eval` compares (docs/PREPROCESSING.md, "Pipelines
of other methods"), run through torchvision on PIL images as their evaluation scripts run them:

- "openai": OpenAI CLIP's transform, which Pic2Word evaluates with (and SEARLE with
  `--preprocess-type clip`): Resize(n, bicubic) of the shortest edge, CenterCrop(n), convert to RGB;
- "targetpad": SEARLE's default: when the long edge is at least 1.25 times the short one, pad
  both sides of the short axis with black (torchvision's constant pad, fill 0) by
  int((long / 1.25 - short) / 2), then the same transform.

The pixels are stored as 8-bit values before ToTensor/Normalize (which are float arithmetic that
lincir checks separately). Inputs: RGB and grey photographs of the fixtures at the real towers'
n = 224, and synthetic PNGs of random shapes at n = 64 (the shapes world's size), chosen so that
both pass orders, enlarging, shrinking and odd crop margins (where torchvision's rounding half to
even and transformers' floor disagree) all occur.

    scripts/.venv/bin/python -m pip install torchvision   # once
    scripts/.venv/bin/python scripts/make_pipeline_fixtures.py

Writes crates/lincir/tests/fixtures/pipelines/{cases.json, expected.safetensors, synthetic_*.png}.
"""
import json
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

FIXTURES = Path("crates/lincir/tests/fixtures")
OUT = FIXTURES / "pipelines"
RATIO = 1.25
PHOTOS = ["rocket_427x640.jpg", "chelsea_small_120x90.png", "rocket_panorama_427x80.png", "camera_gray_256.png"]


def target_pad_sides(w, h):
    """SEARLE's border per side (horizontal, vertical), as its TargetPad computes it."""
    long, short = max(w, h), min(w, h)
    if long / short < RATIO:
        return 0, 0
    scaled = long / RATIO
    return max(int((scaled - w) / 2), 0), max(int((scaled - h) / 2), 0)


def openai_transform(n):
    return Compose([Resize(n, interpolation=InterpolationMode.BICUBIC), CenterCrop(n), lambda im: im.convert("RGB")])


def run(img, pipeline, n):
    if pipeline == "targetpad":
        hp, vp = target_pad_sides(*img.size)
        if (hp, vp) != (0, 0):
            img = TF.pad(img, [hp, vp, hp, vp], 0, "constant")
    out = openai_transform(n)(img)
    assert out.size == (n, n)
    return torch.from_numpy(np.asarray(out).copy())


def synthetic(w, h, seed):
    """Smooth colours with texture, so that resampling and crops show in every value."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    pic = np.stack([
        128 + 100 * np.sin(xx / 7.0 + seed) * np.cos(yy / 11.0),
        128 + 90 * np.cos((xx + 2 * yy) / 9.0),
        128 + 80 * np.sin(yy / 5.0 + xx / 13.0),
    ], axis=-1)
    pic += rng.normal(0, 5, pic.shape)
    return Image.fromarray(np.clip(pic, 0, 255).astype(np.uint8), "RGB")


def half_even_differs(w, h, pipeline, n):
    """Whether torchvision's crop offset differs from transformers' floor for this image."""
    if pipeline == "targetpad":
        hp, vp = target_pad_sides(w, h)
        w, h = w + 2 * hp, h + 2 * vp
    short, long = min(w, h), max(w, h)
    margin = int(n * long / short) - n if short != n else long - n
    return margin % 2 == 1 and (margin // 2) % 2 == 1


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("synthetic_*.png"):
        old.unlink()
    cases, tensors = [], {}
    for name in PHOTOS:
        img = Image.open(FIXTURES / "images" / name)
        assert img.mode in ("RGB", "L"), f"{name}: {img.mode} (other modes convert after resizing in these transforms)"
        for pipeline in ["targetpad"] + (["openai"] if name.startswith("rocket_427") else []):
            key = f"{pipeline}/{name}"
            tensors[key] = run(img, pipeline, 224)
            cases.append({"key": key, "file": f"images/{name}", "pipeline": pipeline, "n": 224, "pad": target_pad_sides(*img.size)})

    # Synthetic images: fixed shapes that matter, then random ones.
    rng = np.random.default_rng(1)
    sizes = [(100, 80), (100, 81), (80, 100), (40, 160), (161, 37), (64, 64), (64, 90), (90, 64), (17, 23), (300, 41)]
    while len(sizes) < 16:
        sizes.append(tuple(int(v) for v in rng.integers(12, 200, size=2)))
    odd = {"openai": 0, "targetpad": 0}
    for i, (w, h) in enumerate(sizes):
        name = f"synthetic_{i:02}_{w}x{h}.png"
        img = synthetic(w, h, i)
        img.save(OUT / name)
        img = Image.open(OUT / name)
        for pipeline in ["openai", "targetpad"]:
            key = f"{pipeline}/{name}"
            tensors[key] = run(img, pipeline, 64)
            odd[pipeline] += half_even_differs(w, h, pipeline, 64)
            cases.append({"key": key, "file": f"pipelines/{name}", "pipeline": pipeline, "n": 64, "pad": target_pad_sides(w, h)})
    assert all(v >= 2 for v in odd.values()), f"too few crops where rounding half to even matters: {odd}"

    save_file(tensors, OUT / "expected.safetensors")
    meta = {"pillow": PIL.__version__, "torchvision": torchvision.__version__, "ratio": RATIO, "cases": cases}
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{len(cases)} cases with Pillow {PIL.__version__}, torchvision {torchvision.__version__}; odd crop margins: {odd}")


if __name__ == "__main__":
    main()
