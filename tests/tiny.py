"""Tiny models that tests build themselves: no hub, no downloads.

A byte-level BPE tokenizer trained on a few standard-library files, and a GPT-2 or Llama config
a few layers deep. `python -m tests.tiny OUT [--arch gpt2|llama] [--train-steps N]` writes a
Hugging Face model directory (optionally trained for N steps on the same files, so its
completions look like Python) for the editor tests and demos.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

import torch

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS_FILES = ["textwrap.py", "shlex.py", "string.py", "glob.py", "fnmatch.py", "bisect.py", "heapq.py",
                "colorsys.py", "keyword.py", "queue.py", "sched.py", "numbers.py"]


def corpus_texts() -> list[str]:
    return [(STDLIB / name).read_text(encoding="utf-8") for name in CORPUS_FILES if (STDLIB / name).exists()]


def build_tokenizer(vocab_size: int = 1024, extra_special: tuple[str, ...] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", *extra_special],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def build_config(arch: str, vocab_size: int, layers: int = 4, width: int = 64, heads: int = 4, positions: int = 512):
    from transformers import GPT2Config, LlamaConfig

    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
                          bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 3, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                           max_position_embeddings=positions, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    raise ValueError(arch)


def build_model(arch: str = "gpt2", layers: int = 4, width: int = 64, heads: int = 4, seed: int = 0, tokenizer=None):
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(build_config(arch, len(tokenizer), layers, width, heads))
    return model.eval(), tokenizer


def train_briefly(model, tokenizer, steps: int, seq_len: int = 128, batch: int = 8, lr: float = 3e-3, seed: int = 0):
    """Plain next-token training on the corpus files: enough for Python-looking suggestions."""
    ids = torch.tensor(tokenizer("\n\n".join(corpus_texts()))["input_ids"])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([ids[s:s + seq_len] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def write_model(out: Path, arch: str = "gpt2", train_steps: int = 0, **shape) -> Path:
    model, tokenizer = build_model(arch, **shape)
    if train_steps:
        train_briefly(model, tokenizer, train_steps)
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    write_model(args.out, args.arch, args.train_steps, layers=args.layers, width=args.width)
    print(args.out)


if __name__ == "__main__":
    main()
