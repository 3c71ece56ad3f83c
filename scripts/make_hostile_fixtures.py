#!/usr/bin/env python3
"""The PIL-compared cases of the hostile-image corpus (issue 10): images whose decoding is unusual
(CMYK JPEG, palette PNG with a transparent entry, EXIF orientations 1-8) and the pixels
transformers' PIL image processor gives for each (what `lincir` must reproduce exactly).

Every image is sized so that preprocessing needs no resampling after EXIF transposition (the
shortest edge is already 224: 224 x 224, or 224 x 300 / 300 x 224), so the comparison is about
decoding, orientation and colour conversion, and does not depend on which Pillow release
resamples (docs/PREPROCESSING.md, "Pillow 13").

    scripts/.venv/bin/python scripts/make_hostile_fixtures.py

Writes crates/lincir/tests/fixtures/hostile/{*.jpg,*.png, expected.safetensors}.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

OUT = Path("crates/lincir/tests/fixtures/hostile")


def main():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    # A smooth colourful picture with some texture (JPEG-friendly, not flat).
    yy, xx = np.mgrid[0:300, 0:224]
    base = np.stack([(xx * 255 // 223), (yy * 255 // 299), ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    base = np.clip(base.astype(int) + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
    files = {}
    # EXIF orientations 1-8 on a 224 x 300 picture (each transposes to 224 x 300 or 300 x 224).
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        name = f"exif_orientation_{o}.jpg"
        Image.fromarray(base).save(OUT / name, quality=92, exif=exif.tobytes())
        files[name] = OUT / name
    # CMYK JPEG (Adobe), 224 x 224.
    Image.fromarray(base[:224]).convert("CMYK").save(OUT / "cmyk.jpg", quality=92)
    files["cmyk.jpg"] = OUT / "cmyk.jpg"
    # Palette PNG with a fully transparent entry and a half-transparent one, 224 x 224.
    pal = Image.fromarray(base[:224]).quantize(16)
    trns = bytes([0, 128] + [255] * 14)
    pal.save(OUT / "palette_trns.png", transparency=trns)
    files["palette_trns.png"] = OUT / "palette_trns.png"
    # Grey + alpha, 224 x 224.
    la = Image.fromarray(np.stack([base[:224, :, 0], base[:224, :, 1]], -1), "LA")
    la.save(OUT / "grey_alpha.png")
    files["grey_alpha.png"] = OUT / "grey_alpha.png"

    proc = CLIPImageProcessorPil()
    mean = np.array(proc.image_mean, dtype=np.float64)[:, None, None]
    std = np.array(proc.image_std, dtype=np.float64)[:, None, None]
    exp = {}
    for name, path in sorted(files.items()):
        img = ImageOps.exif_transpose(Image.open(path))  # as transformers.image_utils.load_image
        px = proc(images=img, return_tensors="np")["pixel_values"][0].astype(np.float64)
        u8 = np.round((px * std + mean) * 255)
        assert np.abs((u8 / 255 - mean) / std - px).max() < 1e-4, name
        exp[name] = torch.from_numpy(u8.astype(np.uint8))
    save_file(exp, str(OUT / "expected.safetensors"))
    print(f"wrote {len(files)} images and their expected pixels to {OUT}")


if __name__ == "__main__":
    main()
