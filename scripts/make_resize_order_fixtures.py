#!/usr/bin/env python3
"""Pillow 13's resampling, pass order included (docs/PREPROCESSING.md): since Pillow 13.0.0,
`Image.resize` runs the vertical pass first when the height shrinks by more than twice as many
pixels as the width, and the two orders round differently. This writes what Pillow gives for

- resizes of small synthetic images (every filter, both orders, sizes drawn at random), whose
  pixels both sides compute from the same formula, so only the outputs are stored;
- one tall picture (a phone screenshot's 9:21 shape, JPEG) through transformers'
  CLIPImageProcessorPil, the path every image takes in lincir.

    scripts/.venv/bin/python scripts/make_resize_order_fixtures.py

Writes crates/lincir/tests/fixtures/resize_order/{cases.json, expected.safetensors, tall_240x560.jpg}.
"""
import json
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image
from safetensors.torch import save_file

OUT = Path("crates/lincir/tests/fixtures/resize_order")
FILTERS = {1: Image.Resampling.LANCZOS, 2: Image.Resampling.BILINEAR, 3: Image.Resampling.BICUBIC}


def synthetic(w, h):
    """The test's image: byte i of the [h][w][3] buffer is (i * 2654435761 >> 13) % 256."""
    i = np.arange(w * h * 3, dtype=np.uint64)
    return ((i * np.uint64(2654435761)) >> np.uint64(13)) % np.uint64(256)


def vertical_first(w, h, ow, oh):
    return (h - oh) > 0 and (h - oh) > (w - ow) * 2


def main():
    major = int(PIL.__version__.split(".")[0])
    assert major >= 13, f"Pillow {PIL.__version__}: the pass order these fixtures pin down is Pillow 13's"
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(13)
    cases, tensors = [], {}
    while len(cases) < 36:
        w, h = (int(v) for v in rng.integers(4, 72, size=2))
        ow, oh = (int(v) for v in rng.integers(2, 72, size=2))
        if ow == w or oh == h:
            continue
        tall = vertical_first(w, h, ow, oh)
        # Half of the cases take each order.
        if tall != (len(cases) % 2 == 1):
            continue
        code = [1, 2, 3][len(cases) % 3]
        src = synthetic(w, h).astype(np.uint8).reshape(h, w, 3)
        out = np.asarray(Image.fromarray(src, "RGB").resize((ow, oh), FILTERS[code]))
        name = f"case{len(cases):02}"
        cases.append({"name": name, "w": w, "h": h, "out_w": ow, "out_h": oh, "filter": code, "vertical_first": tall})
        tensors[name] = torch.from_numpy(out.copy())

    # A tall picture through the image processor: smooth colours with some texture, 240 x 560.
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    yy, xx = np.mgrid[0:560, 0:240].astype(np.float64)
    pic = np.stack([
        128 + 100 * np.sin(xx / 17.0) * np.cos(yy / 29.0),
        128 + 90 * np.cos((xx + yy) / 23.0),
        128 + 80 * np.sin(yy / 11.0 + xx / 41.0),
    ], axis=-1)
    pic += rng.normal(0, 6, pic.shape)
    Image.fromarray(np.clip(pic, 0, 255).astype(np.uint8), "RGB").save(OUT / "tall_240x560.jpg", quality=92)
    img = Image.open(OUT / "tall_240x560.jpg").convert("RGB")
    proc = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    px = proc(images=img, return_tensors="pt")["pixel_values"][0].double()
    mean = torch.tensor(proc.image_mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(proc.image_std, dtype=torch.float64)[:, None, None]
    tensors["tall_240x560.jpg"] = ((px * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    assert vertical_first(240, 560, 224, 522)

    save_file(tensors, OUT / "expected.safetensors")
    (OUT / "cases.json").write_text(json.dumps({"pillow": PIL.__version__, "cases": cases}, indent=1) + "\n")
    print(f"{len(cases)} resizes and one processed picture with Pillow {PIL.__version__}")


if __name__ == "__main__":
    main()
