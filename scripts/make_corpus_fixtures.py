#!/usr/bin/env python3
"""Generates the Parquet caption-source fixtures (committed): files as Hugging Face datasets
publishes them (a `text` column, snappy and zstd compression, several row groups, a null).

    scripts/.venv/bin/pip install pyarrow && scripts/.venv/bin/python scripts/make_corpus_fixtures.py
"""
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path("crates/lincir/tests/fixtures/corpus")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    texts = [f"a photo of caption number {i}" for i in range(25)]
    texts[7] = None
    table = pa.table({"id": list(range(25)), "text": texts})
    pq.write_table(table, OUT / "train-00000-of-00001.parquet", compression="snappy", row_group_size=10)
    pq.write_table(table, OUT / "zstd.parquet", compression="zstd", row_group_size=25)
    pq.write_table(pa.table({"prompt": ["no text column here"]}), OUT / "no_text.parquet")


if __name__ == "__main__":
    main()
