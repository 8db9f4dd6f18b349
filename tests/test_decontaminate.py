"""The training corpus never holds a benchmark item (xtc/train/decontaminate.py, build_corpus)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xtc.core.errors import XtcError
from xtc.eval.benchmark import load_benchmark
from xtc.train.data import build_corpus
from xtc.train.decontaminate import benchmark_keys, holds_item, item_keys, split_contaminated

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "line_completion_stdlib.jsonl"


@pytest.fixture(scope="module")
def items():
    return load_benchmark(BENCHMARK)[:20]


def vendored_copy(item: dict) -> str:
    """The item's file as a package would vendor it: a header, other spacing, blank lines added."""
    text = item["input"] + item["gt"] + "\n" + item.get("suffix", "")
    return "# vendored copy\n" + text.replace("\n", "\n\n").replace(" = ", "  =  ").replace("\t", "    ")


def test_an_item_is_found_whatever_the_spacing(items):
    keys = item_keys(items)
    assert len(keys) == 20 and keys.items == 20
    for item in items:
        assert holds_item(vendored_copy(item), keys)
        assert holds_item(vendored_copy(item).replace("\n", "\r\n").encode(), keys)
    assert not holds_item("def f():\n    return 1\n\nx = f()\n", keys)
    assert not holds_item("", keys)


def test_the_input_alone_or_another_line_is_not_the_item(items):
    item = items[0]
    keys = item_keys([item])
    assert not holds_item(item["input"] + "\n", keys)  # the cut line is not complete
    assert not holds_item(item["input"] + item["gt"] + "x\n", keys)  # a different line


def test_build_corpus_drops_files_holding_an_item_and_keeps_the_rest(tmp_path, tokenizer, items):
    data = tmp_path / "site-packages"
    (data / "vendored" / "_lib").mkdir(parents=True)
    (data / "vendored" / "_lib" / "copy.py").write_text(vendored_copy(items[3]))
    unrelated = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n    y: int = 0\n" * 40
    (data / "mine.py").write_text(unrelated)
    (data / "other.py").write_text(unrelated.replace("add", "sub"))

    clean = build_corpus([data], tokenizer, max_tokens=None, exclude=items)
    assert clean.train_files + clean.val_files == 2 and clean.dropped_files == 1
    assert "1 files dropped that hold items of 20 benchmark items" in clean.describe()
    everything = build_corpus([data], tokenizer, max_tokens=None)
    assert everything.train_files + everything.val_files == 3 and everything.dropped_files == 0
    assert "dropped" not in everything.describe()

    from_file = build_corpus([data], tokenizer, max_tokens=None, exclude=BENCHMARK)  # a JSON Lines file works too
    assert from_file.dropped_files == 1 and "line_completion_stdlib.jsonl" in from_file.describe()


def test_a_corpus_made_only_of_benchmark_files_is_refused(tmp_path, tokenizer, items):
    (tmp_path / "copy.py").write_text(vendored_copy(items[0]))
    with pytest.raises(XtcError, match="holds an item"):
        build_corpus([tmp_path], tokenizer, exclude=items)


def test_the_standard_library_files_the_benchmark_was_cut_from_are_found(tmp_path):
    """The shipped benchmark against the stdlib it came from: every source file of an item whose
    input reaches two lines back is caught."""
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    items = load_benchmark(BENCHMARK)
    keys = benchmark_keys(BENCHMARK)
    sources = sorted({stdlib / item["source"].rsplit(":", 1)[0] for item in items[:50]})
    sources = [p for p in sources if p.exists()]
    assert sources
    _, dropped = split_contaminated(sources, keys)
    assert dropped == sources
