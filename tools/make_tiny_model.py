"""Write a small random-weight Llama checkpoint and a word-level tokenizer for serving it with vLLM on a CPU.

    python3 tools/make_tiny_model.py OUT_DIR            # 4 layers, hidden 256, vocab 4096 (about 10 M params)

The weights are random (torch seed 0) and saved by `save_pretrained`; the tokenizer is built with the
`tokenizers` library: a word-level vocabulary `w0 .. w{V-1}` split on whitespace, so a prompt of N words is
exactly N tokens and decoding then encoding a token sequence gives it back (what vLLM's benchmark client
needs to send prompts of exact lengths). Nothing is downloaded. Runs with any Python that has torch,
transformers and tokenizers (the project's, or the vLLM venv of tools/make_vllm_env.sh); same arguments,
same files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPECIAL = ["<unk>", "<s>", "</s>"]


def build_tokenizer(vocab_size: int):
    """A word-level fast tokenizer over `vocab_size` ids: the special tokens, then w0, w1, ..."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for i in range(vocab_size - len(SPECIAL)):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   model_max_length=1 << 20)


def build_model(layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, vocab: int, context: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=context, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                         torch_dtype="float32")
    return LlamaForCausalLM(config).eval()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--context", type=int, default=4096)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = build_model(args.layers, args.hidden, args.heads, args.kv_heads, args.intermediate, args.vocab, args.context)
    model.save_pretrained(args.out)
    build_tokenizer(args.vocab).save_pretrained(args.out)
    config = json.loads((args.out / "config.json").read_text())
    print(f"wrote {args.out}: {config['architectures'][0]}, {args.layers} layers, hidden {args.hidden}, "
          f"vocab {args.vocab}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
