#!/usr/bin/env python3
"""HEIC photos and what Pillow with pillow-heif decodes from them (the reference for lincir's
`heic` feature, docs/PREPROCESSING.md): an 8-bit photo, one whose EXIF orientation 6 pillow-heif
turned into HEIF's own rotation on saving, one with an alpha channel and a 10-bit one (decoded to
8 bits, pillow-heif's default); and the rotated one again with a stored 128-pixel thumbnail (for
previews; no reference pixels). Each reference is stored as a lossless PNG of the decoded pixels
(RGB, or RGBA for the alpha case) as `Image.open(f)` gives them.

    scripts/.venv/bin/pip install pillow-heif
    scripts/.venv/bin/python scripts/make_heic_fixtures.py

Writes crates/lincir/tests/fixtures/heic/{*.heic, *.heic.png, versions.json}.
"""
import json
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

OUT = Path("crates/lincir/tests/fixtures/heic")


def picture(w, h, rng):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.stack([
        128 + 100 * np.sin(xx / 17.0) * np.cos(yy / 29.0),
        128 + 90 * np.cos((xx + yy) / 23.0),
        128 + 80 * np.sin(yy / 11.0 + xx / 41.0),
    ], axis=-1) + rng.normal(0, 3, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def main():
    pillow_heif.register_heif_opener()
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    w, h = 256, 192
    rgb = picture(w, h, rng)
    Image.fromarray(rgb).save(OUT / "photo.heic", quality=85)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: pillow-heif writes it as an `irot` property
    Image.fromarray(rgb).save(OUT / "rotated.heic", quality=85, exif=exif.tobytes())
    alpha = np.clip(np.mgrid[0:h, 0:w][1] / w * 255, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(OUT / "alpha.heic", quality=85)
    # A stored thumbnail (long edge 128), as phones store one; rotated like rotated.heic.
    Image.fromarray(rgb).save(OUT / "thumbnail.heic", quality=85, exif=exif.tobytes(), thumbnails=[128])
    deep = pillow_heif.from_bytes(mode="RGB;16", size=(w, h), data=(rgb.astype(np.uint16) * 257).tobytes())
    deep.save(OUT / "ten_bit.heic", quality=85)

    for name in ["photo.heic", "rotated.heic", "alpha.heic", "ten_bit.heic"]:
        im = Image.open(OUT / name)
        im.load()
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        im.convert(mode).save(OUT / f"{name}.png")
        print(f"{name}: {im.size} {im.mode}")
    assert Image.open(OUT / "rotated.heic").size == (h, w)
    thumb = pillow_heif.open_heif(OUT / "thumbnail.heic").info["thumbnails"]
    assert thumb == [128], thumb
    versions = {"pillow_heif": pillow_heif.__version__, **{k: v for k, v in pillow_heif.libheif_info().items() if k in ("libheif", "decoders")}}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")


if __name__ == "__main__":
    main()
