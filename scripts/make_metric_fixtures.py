#!/usr/bin/env python3
"""Cross-check fixture for the benchmark metrics: the official metric definitions (written from
../shared/docs/LINCIR.md, "Evaluation"), in numpy, on the real annotation files of
../shared/benchmarks with deterministic integer features.

Gallery features are small integers (-8..7) drawn from SplitMix64 streams that lincir's `rng::Rng`
reproduces exactly, and a query is 2 x its target's gallery feature plus such noise, so rankings spread over the whole
range; scores (dot products of integers) are exact in f32 on both sides and rankings can be
compared without rounding noise. Ties rank by gallery (or candidate) order on both sides.

    python3 scripts/make_metric_fixtures.py [--shared ../shared]

Writes crates/lincir/tests/fixtures/metrics_crosscheck.json (metrics only; the shared suite test
regenerates the features in Rust).
"""
import argparse, json
from pathlib import Path

import numpy as np

M64 = (1 << 64) - 1
SEED = 2024
DIM = 8
CIRCO_DISTRACTORS = 3000


class Rng:
    """lincir's rng::Rng (SplitMix64)."""

    def __init__(self, state):
        self.state = state & M64

    @staticmethod
    def derive(seed, purpose, index):
        r = Rng(seed ^ ((purpose * 0x9E3779B97F4A7C15) & M64))
        return Rng(r.next_u64() ^ ((index * 0xD1B54A32D192ED03) & M64))

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)


def features(purpose, n):
    """n x DIM integers in -8..7 from the stream (SEED, purpose, 0)."""
    r = Rng.derive(SEED, purpose, 0)
    return np.array([(r.next_u64() >> 60) - 8 for _ in range(n * DIM)], dtype=np.float32).reshape(n, DIM)


def queries(g, targets, purpose):
    """2 * the target's gallery feature + noise: rankings spread over the whole range."""
    return 2 * g[np.array(targets)] + features(purpose, len(targets))


def order(scores):
    return np.argsort(-scores, kind="stable")


def rank_of(scores, candidates, target, excluded=None):
    cands = [c for c in candidates if c != excluded]
    if target not in cands:
        return None
    ranked = sorted(range(len(cands)), key=lambda i: (-scores[cands[i]], i))
    return [cands[i] for i in ranked].index(target)


def recall(ranks, k):
    return 100.0 * sum(r is not None and r < k for r in ranks) / len(ranks)


def cirr(root):
    caps = json.load(open(root / "cirr/captions/cap.rc2.val.json"))
    names = sorted(json.load(open(root / "cirr/image_splits/split.rc2.val.json")))
    idx = {n: i for i, n in enumerate(names)}
    g = features(101, len(names))
    q = queries(g, [idx[c["target_hard"]] for c in caps], 102)
    s = q @ g.T
    ranks, sub = [], []
    for i, c in enumerate(caps):
        ref, tgt = idx[c["reference"]], idx[c["target_hard"]]
        ranks.append(rank_of(s[i], list(range(len(names))), tgt, ref))
        sub.append(rank_of(s[i], [idx[m] for m in c["img_set"]["members"]], tgt, ref))
    return {"all": {**{f"R@{k}": recall(ranks, k) for k in (1, 5, 10, 50)},
                    **{f"Rs@{k}": recall(sub, k) for k in (1, 2, 3)}}}


def fashioniq(root):
    out = {}
    for j, cat in enumerate(("dress", "shirt", "toptee")):
        caps = json.load(open(root / f"captions/cap.{cat}.val.json"))
        names = json.load(open(root / f"image_splits/split.{cat}.val.json"))
        idx = {n: i for i, n in enumerate(names)}
        g = features(201 + 10 * j, len(names))
        q = queries(g, [idx[c["target"]] for c in caps], 202 + 10 * j)
        s = q @ g.T
        ranks = [rank_of(s[i], list(range(len(names))), idx[c["target"]]) for i, c in enumerate(caps)]
        out[cat] = {f"R@{k}": recall(ranks, k) for k in (10, 50)}
    out["mean"] = {f"R@{k}": sum(out[c][f"R@{k}"] for c in ("dress", "shirt", "toptee")) / 3 for k in (10, 50)}
    return out


def circo_gallery(anns):
    ids = {a["reference_img_id"] for a in anns} | {a["target_img_id"] for a in anns} | {g for a in anns for g in a["gt_img_ids"]}
    return sorted(ids | {10**9 + i for i in range(CIRCO_DISTRACTORS)})


def circo(root):
    anns = json.load(open(root / "annotations/val.json"))
    ids = circo_gallery(anns)
    idx = {v: i for i, v in enumerate(ids)}
    g = features(301, len(ids))
    q = queries(g, [idx[a["target_img_id"]] for a in anns], 302)
    s = q @ g.T
    def ap(top, gt, k):
        hits, total = 0, 0.0
        for i, v in enumerate(top[:k]):
            if v in gt:
                hits += 1
                total += hits / (i + 1)
        return 100.0 * total / min(len(gt), k)
    tops = [list(order(s[i])[:50]) for i in range(len(anns))]
    gts = [[idx[x] for x in a["gt_img_ids"]] for a in anns]
    allm = {f"mAP@{k}": float(np.mean([ap(t, gt, k) for t, gt in zip(tops, gts)])) for k in (5, 10, 25, 50)}
    allm.update({f"R@{k}": float(np.mean([100.0 if idx[a["target_img_id"]] in t[:k] else 0.0 for a, t in zip(anns, tops)]))
                 for k in (5, 10, 25, 50)})
    aspects = {}
    for a, t, gt in zip(anns, tops, gts):
        for asp in a["semantic_aspects"]:
            aspects.setdefault(asp, []).append(ap(t, gt, 10))
    return {"all": allm, "mAP@10 by semantic aspect": {k: float(np.mean(v)) for k, v in sorted(aspects.items())}}


def genecis(root):
    out = {}
    for j, task in enumerate(("focus_object", "change_object")):
        recs = json.load(open(root / f"genecis/{task}.json"))
        images, idx = [], {}
        def intern(v):
            key = v["val_image_id"]
            if key not in idx:
                idx[key] = len(images)
                images.append(key)
            return idx[key]
        parsed = []
        for r in recs:
            ref = intern(r["reference"])
            cands = [intern(r["target"])] + [intern(x) for x in r["gallery"]]
            parsed.append((ref, cands))
        g = features(401 + 10 * j, len(images))
        q = queries(g, [cands[0] for _, cands in parsed], 402 + 10 * j)
        s = q @ g.T
        ranks = [rank_of(s[i], cands, cands[0]) for i, (_, cands) in enumerate(parsed)]
        out[task] = {f"R@{k}": recall(ranks, k) for k in (1, 2, 3)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared")
    b = Path(ap.parse_args().shared) / "benchmarks"
    res = {"seed": SEED, "dim": DIM, "circo_distractors": CIRCO_DISTRACTORS,
           "cirr": cirr(b / "CIRR"), "fashioniq": fashioniq(b / "FashionIQ"),
           "circo": circo(b / "CIRCO"), "genecis": genecis(b / "GeneCIS")}
    out = Path("crates/lincir/tests/fixtures/metrics_crosscheck.json")
    out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    print(json.dumps(res, indent=1)[:1500])


if __name__ == "__main__":
    main()
