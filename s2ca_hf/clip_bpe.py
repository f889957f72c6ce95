"""CLIP's BPE tokenizer files (`vocab.json`, `merges.txt`), written without a download, for the package's tiny
processor (`tiny.py`) and the small CLIP that `training/pretrain_clip.py` trains. It lives in the package, not in
`training/`, because `s2ca_hf.tiny` (the demo's and the tests' processor) needs it and the package never imports
the training scripts."""

import json
import os

from transformers.convert_slow_tokenizer import bytes_to_unicode


START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"


def byte_symbols() -> list[str]:
    """Every byte as CLIP's byte-level BPE spells it, alone and word-final (`</w>`): with these at the start of a
    vocabulary, any text tokenises, whatever merges follow."""
    symbols = list(bytes_to_unicode().values())
    return symbols + [symbol + "</w>" for symbol in symbols]


def save_bpe_files(folder: str, vocab: list[str], merges: list[tuple[str, str]]) -> None:
    """Writes `vocab.json` (each token's id is its position; CLIP's start and end tokens are appended) and
    `merges.txt` in CLIP's layout, which `CLIPTokenizer.from_pretrained(folder)` reads."""
    vocab = [*vocab, START_TOKEN, END_TOKEN]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
