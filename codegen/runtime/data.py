"""Training tokens: from a file (a pre-tokenized `.npy` array, a raw `.bin` of uint16/uint32 ids, or text
plus a tokenizer built offline), else seeded synthetic tokens.

The batch of step k is a function of (seed, k) alone: `batch` sequences of `seq_len + 1` tokens from
windows whose starts a generator seeded with seed + 1 + k draws. A resumed run therefore sees the
same batches as an uninterrupted one, and every data-parallel replica takes its rows of the same batch.

Tokenizers: `bytes` (UTF-8 bytes as ids 0..255, no file), or a Hugging Face `tokenizer.json` (the file
or its folder), loaded offline with the `tokenizers` library. Pre-tokenize a large text once with
`python -m aot_runtime.data --tokenizer T input.txt tokens.npy`.

>>> TokenSource(torch.arange(100), 128, seed=0).batch(3, 2, 4)[0].shape
torch.Size([2, 4])
>>> encode_text("hi", "bytes")
[104, 105]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from .base import PlanError


def encode_text(text: str, tokenizer: str) -> list[int]:
    """Token ids of `text` by `tokenizer` (module docstring)."""
    if tokenizer == "bytes":
        return list(text.encode("utf-8"))
    path = Path(tokenizer)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise PlanError(f"tokenizer {tokenizer} is neither 'bytes' nor a tokenizer.json (or its folder); build one "
                        f"offline and pass its path")
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(file)).encode(text).ids


def load_tokens(path: str, tokenizer: str | None, bin_dtype: str = "uint16") -> np.ndarray:
    """The 1-D token ids of a data file (memory-mapped for .npy and .bin)."""
    file = Path(path)
    if not file.is_file():
        raise PlanError(f"data file {path} does not exist (paths are relative to where you launch)")
    if file.suffix == ".npy":
        tokens = np.load(file, mmap_mode="r")
    elif file.suffix == ".bin":
        tokens = np.memmap(file, dtype=np.dtype(bin_dtype), mode="r")
    else:
        if tokenizer is None:
            raise PlanError(f"data file {path} is text: pass --tokenizer (a tokenizer.json, or 'bytes'), or a "
                            f"pre-tokenized .npy/.bin")
        tokens = np.asarray(encode_text(file.read_text(encoding="utf-8"), tokenizer), dtype=np.int64)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise PlanError(f"data file {path} must hold a 1-D array of integer token ids, not {tokens.dtype} {tokens.shape}")
    return tokens


class TokenSource:
    """Batches of (inputs, next-token labels) for step k (module docstring)."""

    def __init__(self, tokens, vocab_size: int, seed: int):
        self.tokens, self.vocab_size, self.seed = tokens, vocab_size, seed
        if tokens is not None and len(tokens):
            top = int(np.asarray(tokens).max()) if len(tokens) < 1 << 24 else None
            if top is not None and top >= vocab_size:
                raise PlanError(f"the data holds token id {top}, the model's vocabulary has {vocab_size}; use the "
                                f"model's tokenizer")

    def batch(self, step: int, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed + 1 + step)
        if self.tokens is None:
            rows = torch.randint(0, self.vocab_size, (batch, seq_len + 1), generator=gen)
        else:
            count = len(self.tokens) - seq_len
            if count < 1:
                raise PlanError(f"the data holds {len(self.tokens)} tokens, fewer than --seq-len + 1 = {seq_len + 1}")
            starts = torch.randint(0, count, (batch,), generator=gen).tolist()
            rows = torch.stack([torch.from_numpy(np.asarray(self.tokens[s:s + seq_len + 1], dtype=np.int64))
                                for s in starts])
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def main(argv: list[str] | None = None) -> int:
    """`python -m aot_runtime.data --tokenizer T input.txt tokens.npy`: pre-tokenize a text file."""
    parser = argparse.ArgumentParser(description="Tokenize a text file into a .npy of token ids.")
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json (or its folder), or 'bytes'")
    parser.add_argument("text")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    ids = encode_text(Path(args.text).read_text(encoding="utf-8"), args.tokenizer)
    np.save(args.out, np.asarray(ids, dtype=np.uint32 if max(ids, default=0) >= 1 << 16 else np.uint16))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
