#!/usr/bin/env python3
"""How far `--jpeg-decode fast` moves CLIP's input pixels from the exact decode, on real photographs.

For every JPEG in a folder and each reducing gap: the 224 x 224 center crop of transformers'
pipeline (shortest edge to 224 with bicubic, crop floored) from the full decode, against the same
crop from Pillow's `draft("RGB", (gap * 224, gap * 224))` + `resize(box=...)`: what lincir
computes for `fast`, bit for bit (tests/preprocess_parity.rs,
`fast_jpeg_decoding_matches_pillows_draft_and_box_resize`). Differences in levels of 0-255.

    scripts/.venv/bin/python scripts/fast_jpeg_quality.py PHOTO_DIR OUT.json
"""
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 224


def crop_224(im, full, box=None):
    w, h = full
    if w <= h:
        rw, rh = SIZE, int(SIZE * h / w)
    else:
        rw, rh = int(SIZE * w / h), SIZE
    out = im.resize((rw, rh), Image.Resampling.BICUBIC, box=box)
    left, top = (rw - SIZE) // 2, (rh - SIZE) // 2
    return np.asarray(out.crop((left, top, left + SIZE, top + SIZE)), dtype=np.float32)


def main():
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    report = {"photos": [], "gaps": {}}
    for gap in (1, 2, 3):
        per_photo = []
        for f in files:
            data = f.read_bytes()
            exact_im = Image.open(io.BytesIO(data))
            full = exact_im.size
            exact = crop_224(exact_im.convert("RGB"), full)
            im = Image.open(io.BytesIO(data))
            _, box = im.draft("RGB", (gap * SIZE, gap * SIZE))
            fast = crop_224(im.convert("RGB"), full, box)
            d = np.abs(exact - fast)
            per_photo.append({"file": f.name, "size": list(full), "divisor": round(full[0] / box[2]), "mean": float(d.mean()),
                              "p99": float(np.percentile(d, 99)), "max": float(d.max())})
        report["gaps"][gap] = {
            "mean": float(np.mean([p["mean"] for p in per_photo])),
            "worst_photo_mean": float(np.max([p["mean"] for p in per_photo])),
            "p99_mean": float(np.mean([p["p99"] for p in per_photo])),
            "max": float(np.max([p["max"] for p in per_photo])),
            "photos": per_photo,
        }
        g = report["gaps"][gap]
        print(f"gap {gap}: mean |difference| {g['mean']:.3f} levels (worst photo {g['worst_photo_mean']:.2f}), "
              f"99th percentile {g['p99_mean']:.2f}, max {g['max']:.0f}")
    report["photos"] = [{"file": f.name, "megapixels": round(Image.open(f).size[0] * Image.open(f).size[1] / 1e6, 1),
                         "progressive": bool(Image.open(f).info.get("progressive", 0))} for f in files]
    out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
