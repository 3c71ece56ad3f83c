#!/usr/bin/env python3
"""Writes a random-weight CLIP of ViT-L/14 size in Hugging Face layout for speed benchmarks
(no real weights can be downloaded here; speed does not depend on the values).

    python3 scripts/make_bench_model.py OUT_DIR [--size large|base|bigG-text|large-text] [--device cuda]

`bigG-text` and `large-text` are the real text towers of ViT-bigG/14 (laion/CLIP-ViT-bigG-14) and
ViT-L/14 with a one-layer toy vision tower: training loads only the text tower, and a random 1.8 B
parameter vision tower would take minutes to make and gigabytes to store for nothing.
"""
import argparse, json, shutil
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

SIZES = {
    # openai/clip-vit-large-patch14
    "large": dict(projection_dim=768,
                  text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768),
                  vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                     patch_size=14, image_size=224, projection_dim=768)),
    # openai/clip-vit-base-patch32
    "base": dict(projection_dim=512,
                 text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, projection_dim=512),
                 vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                    patch_size=32, image_size=224, projection_dim=512)),
}
TOY_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, patch_size=14, image_size=224)
# laion/CLIP-ViT-bigG-14-laion2B-39B-b160k: text width 1280, 32 layers, 20 heads, gelu, projection 1280
SIZES["bigG-text"] = dict(projection_dim=1280,
                          text_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                                           hidden_act="gelu", projection_dim=1280),
                          vision_config=dict(TOY_VISION, projection_dim=1280))
SIZES["large-text"] = dict(SIZES["large"], vision_config=dict(TOY_VISION, projection_dim=768))
# For dry runs of scripts/gpu_check.sh on a CPU.
SIZES["tiny"] = dict(projection_dim=32,
                     text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
                     vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                        patch_size=32, image_size=224, projection_dim=32))

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--size", default="large", choices=sorted(SIZES))
ap.add_argument("--device", default="cpu", help="where to initialise the weights (cuda is much faster for the big towers)")
args = ap.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
with torch.device(args.device):
    model = CLIPModel(CLIPConfig(**SIZES[args.size])).eval()
model.save_pretrained(out, safe_serialization=True)
bpe = Path(__file__).resolve().parent.parent / "crates/lincir/tests/fixtures/bpe"
for f in ("vocab.json", "merges.txt"):
    shutil.copy(bpe / f, out / f)
(out / "preprocessor_config.json").write_text(json.dumps({
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 224}}, indent=2))
print(f"wrote {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters)")
