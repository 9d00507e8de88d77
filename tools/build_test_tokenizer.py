"""Build the byte-level BPE tokenizer the training tests use (tests/data/tiny_tokenizer.json) from the
test corpus, offline, with the `tokenizers` library: 512 ids, tiny-llama's vocabulary size.

    python3 tools/build_test_tokenizer.py
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
VOCAB = 512


def build(corpus: Path, vocab: int = VOCAB) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train([str(corpus)], trainer)
    return tokenizer


def main() -> None:
    tokenizer = build(DATA / "tiny_corpus.txt")
    tokenizer.save(str(DATA / "tiny_tokenizer.json"))
    ids = tokenizer.encode((DATA / "tiny_corpus.txt").read_text()).ids
    print(f"vocabulary {tokenizer.get_vocab_size()}, corpus {len(ids)} tokens, largest id {max(ids)}")


if __name__ == "__main__":
    main()
