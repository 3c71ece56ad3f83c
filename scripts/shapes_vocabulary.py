#!/usr/bin/env python3
"""The shapes world's concept vocabulary for SEARLE (100 concepts: shapes, colours, coloured
shapes, backgrounds, sized shapes), one per line, written to OUT.

    python3 scripts/shapes_vocabulary.py OUT
"""
import sys

shapes = "circle square triangle star cross diamond hexagon pentagon".split()
colours = "red green blue yellow purple orange white black".split()
words = shapes + colours + [f"{c} {s}" for c in colours for s in shapes] + [f"{b} background" for b in "gray brown pink cyan".split()] \
    + [f"{z} {s}" for z in ("small", "large") for s in shapes]
open(sys.argv[1], "w").write("\n".join(words) + "\n")
