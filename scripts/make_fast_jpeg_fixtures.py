#!/usr/bin/env python3
"""Fast JPEG decoding (`--jpeg-decode fast`, docs/PREPROCESSING.md): what Pillow gives when a JPEG
is decoded at a reduced size by its `draft` and then resized over the box `draft` returns, as
Pillow's own `thumbnail` does, followed by transformers' center crop.

For each test JPEG and crop size S: `draft("RGB", (3 S, 3 S))` (lincir's reducing gap of 3), the
EXIF orientation applied to the reduced image and to its box, the shortest edge resized to S with
bicubic as transformers computes the size from the full upright image, the center crop (offsets
floored). Small sizes S make the repository's small photographs take every reduction (1/2, 1/4,
1/8, and none).

    scripts/.venv/bin/python scripts/make_fast_jpeg_fixtures.py

Writes crates/lincir/tests/fixtures/fast_jpeg/{cases.json, expected.safetensors}.
"""
import json
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

IMAGES = Path("crates/lincir/tests/fixtures/images")
OUT = Path("crates/lincir/tests/fixtures/fast_jpeg")
GAP = 3
CASES = {
    "astronaut_512x512.jpg": [16, 32, 64, 96],
    "rocket_427x640.jpg": [16, 40, 72],
    "coffee_exif_rotated.jpg": [8, 16, 40],
}
TURNS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def resized_size(w, h, s):
    """transformers' get_resize_output_image_size(default_to_square=False), as (width, height)."""
    short, long = (w, h) if w <= h else (h, w)
    if short == s:
        return w, h
    new_long = int(s * long / short)
    return (s, new_long) if w <= h else (new_long, s)


def main():
    major = int(PIL.__version__.split(".")[0])
    assert major >= 13, f"Pillow {PIL.__version__}: lincir's resampling is Pillow 13's"
    OUT.mkdir(parents=True, exist_ok=True)
    cases, tensors = [], {}
    for name, sizes in CASES.items():
        for s in sizes:
            im = Image.open(IMAGES / name)
            orientation = im.getexif().get(0x0112, 1)
            stored = im.size
            _, box = im.draft("RGB", (GAP * s, GAP * s))
            divisor = round(stored[0] / box[2])
            reduced = im.size
            if orientation in TURNS:
                full, box = (stored[1], stored[0]), (0, 0, box[3], box[2])
            else:
                full = stored
            im = ImageOps.exif_transpose(im).convert("RGB")
            rw, rh = resized_size(full[0], full[1], s)
            out = im.resize((rw, rh), Image.Resampling.BICUBIC, box=box)
            left, top = (rw - s) // 2, (rh - s) // 2
            crop = np.asarray(out.crop((left, top, left + s, top + s)), dtype=np.uint8)
            key = f"{name}@{s}"
            tensors[key] = torch.from_numpy(crop.copy())
            cases.append({"key": key, "file": f"images/{name}", "size": s, "divisor": divisor, "reduced": list(reduced), "full": list(full)})
            print(f"{key}: {stored} stored, orientation {orientation}, decoded at 1/{divisor} {reduced}, resized to {rw}x{rh}")
    save_file(tensors, str(OUT / "expected.safetensors"))
    meta = {"pillow": PIL.__version__, "gap": GAP, "cases": cases}
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
