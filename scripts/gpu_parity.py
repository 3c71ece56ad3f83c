#!/usr/bin/env python3
"""Reference embeddings for the GPU parity check (scripts/gpu_check.sh), and the comparison.

    python3 scripts/gpu_parity.py embed MODEL_DIR TEXTS_FILE IMAGES_DIR OUT.safetensors [--device cuda]
        transformers' CLIP in f32: `text` [N, P] (one text per line, tokenised as CLIPTokenizer
        does, padded to the longest: transformers' own causal mask) and `image` [M, P] (the
        image files sorted by name, CLIPImageProcessor with PIL), both projected, un-normalised.
    python3 scripts/gpu_parity.py compare A.safetensors:TENSOR B.safetensors:TENSOR
        prints max |a - b| / max |b| (the parity measure of tests/common) as JSON.
"""
import json, sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def rel_err(a, b):
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max()).item()


def strict_f32():
    """f32 as written on a GPU: cuDNN's convolutions (the patch embedding) use TF32 by default,
    which alone moves the image embeddings by about 1e-3 and would read as an error of lincir's."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def embed(model_dir, texts_file, images_dir, out, device):
    from PIL import Image
    from transformers import CLIPModel, CLIPTokenizer
    try:  # the PIL processor (what lincir reproduces bit for bit), not the torchvision one
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    dev = torch.device(device)
    strict_f32()
    model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).to(dev).eval()
    sys.path.insert(0, str(Path(__file__).parent))
    from make_clip_fixtures import check_causal
    check_causal(model)
    tok = CLIPTokenizer.from_pretrained(model_dir)
    proc = Processor.from_pretrained(model_dir)
    texts = [l for l in Path(texts_file).read_text().splitlines()]
    files = sorted(p for p in Path(images_dir).iterdir() if p.is_file())
    with torch.no_grad():
        ids = tok(texts, padding="longest", return_tensors="pt").input_ids.to(dev)
        t = model.get_text_features(input_ids=ids)
        t = t if torch.is_tensor(t) else t.pooler_output
        px = proc([Image.open(f).convert("RGB") for f in files], return_tensors="pt").pixel_values.to(dev)
        i = model.get_image_features(pixel_values=px)
        i = i if torch.is_tensor(i) else i.pooler_output
    save_file({"text": t.float().cpu().contiguous(), "image": i.float().cpu().contiguous()}, out)


def load(spec):
    path, name = spec.rsplit(":", 1)
    return load_file(path)[name]


if __name__ == "__main__":
    if sys.argv[1] == "embed":
        dev = "cuda"
        args = sys.argv[2:]
        if "--device" in args:
            k = args.index("--device")
            dev = args[k + 1]
            del args[k:k + 2]
        embed(*args, device=dev)
    elif sys.argv[1] == "compare":
        print(json.dumps({"a": sys.argv[2], "b": sys.argv[3], "rel_err": rel_err(load(sys.argv[2]), load(sys.argv[3]))}))
    else:
        sys.exit(__doc__)
