"""Every `xtc` command, as a user calls it, and the bad inputs that must give a one-line error
(docs/commands.md: a missing path, an unknown architecture, a corrupt file, a bad flag)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from xtc.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse exits on bad flags
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def benchmark_file(tmp_path_factory):
    from tests.tiny import STDLIB
    from xtc.eval.benchmark import write_benchmark
    from xtc.eval.build import build_benchmark

    src = tmp_path_factory.mktemp("bench-src")
    for name in ("textwrap.py", "shlex.py"):
        shutil.copy(STDLIB / name, src / name)
    path = tmp_path_factory.mktemp("bench") / "bench.jsonl"
    write_benchmark(build_benchmark([src], 4, 0), path)
    return path


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory, tiny_dirs, corpus_dir):
    out = tmp_path_factory.mktemp("packed") / "hybrid"
    code = main(["compress", "--teacher", str(tiny_dirs["llama"]), "--method", "hybrid", "--data", str(corpus_dir),
                 "--out", str(out), "--steps", "3", "--seq-len", "32", "--batch-size", "2", "--cache-tokens", "4096",
                 "--device", "cpu", "--json"])
    assert code == 0
    return out


def test_compress_writes_a_packed_model_and_a_summary(packed_dir):
    config = json.loads((packed_dir / "config.json").read_text())
    assert config["xtc"]["method"] == "hybrid" and config["xtc"]["recipe"] == "blockwise" and config["xtc"]["act_bits"] == 8
    assert {q["levels"] for name, q in config["xtc"]["quant"].items() if ".layers." in name} == {2}  # binary
    assert config["xtc"]["kept_layers"] == [1, 3] and config["num_hidden_layers"] == 2
    summary = json.loads((packed_dir / "training" / "summary.json").read_text())
    assert summary["ratio"] > 1 and summary["packed_mb"] < summary["teacher_fp32_mb"]
    assert [s["stage"] for s in summary["stages"]] == ["cache", "blocks", "e2e"]


def test_compress_leaves_out_corpus_files_holding_benchmark_items(packed_dir):
    # the corpus is standard-library files, and the shipped benchmark was cut from them
    summary = json.loads((packed_dir / "training" / "summary.json").read_text())
    assert "files dropped that hold items of line_completion_stdlib.jsonl" in summary["corpus"]


def test_eval_reports_the_spec_fields(capsys, packed_dir, benchmark_file):
    result = run_json(capsys, "eval", "--model", str(packed_dir), "--benchmark", str(benchmark_file), "--limit", "2", "--json")
    assert {"model", "n", "exact_match", "edit_similarity", "score", "seconds"} <= set(result)
    assert result["n"] == 2
    assert 0 <= result["exact_match"] <= 100 and 0 <= result["edit_similarity"] <= 100
    assert result["score"] == pytest.approx((result["exact_match"] + result["edit_similarity"]) / 2)


def test_eval_shards_resume_and_merge_into_the_full_result(capsys, tiny_dirs, benchmark_file, tmp_path):
    model, bench = str(tiny_dirs["gpt2"]), str(benchmark_file)
    full = run_json(capsys, "eval", "--model", model, "--benchmark", bench, "--json")
    files = [tmp_path / f"shard-{k}.jsonl" for k in (1, 2)]
    for k, f in enumerate(files, start=1):
        run_json(capsys, "eval", "--model", model, "--benchmark", bench, "--shard", f"{k}/2", "--predictions", str(f),
                 "--threads", "1", "--json")
    assert [json.loads(x)["index"] for x in files[1].read_text().splitlines()] == [1, 3]
    again = run_json(capsys, "eval", "--model", model, "--benchmark", bench, "--shard", "2/2", "--predictions",
                     str(files[1]), "--json")  # resumed: nothing left to do, same result
    assert again["n"] == 2 and len(files[1].read_text().splitlines()) == 2
    merged = run_json(capsys, "eval", "--merge", *map(str, files), "--benchmark", bench, "--json")
    assert set(merged) == set(full)
    for key in ("model", "n", "exact_match", "edit_similarity", "score"):
        assert merged[key] == pytest.approx(full[key])
    code, _, err = run(capsys, "eval", "--merge", str(files[0]), "--benchmark", bench)
    assert_one_line_error(code, err, "2 of 4 items have no prediction")


@pytest.mark.parametrize(("argv", "needle"), [
    (["eval", "--model", "x", "--benchmark", "b", "--shard", "3/2"], "K/N"),
    (["eval", "--model", "x", "--benchmark", "b", "--shard", "two"], "K/N"),
    (["eval", "--benchmark", "b.jsonl"], "--model"),
    (["eval", "--merge", "nope.jsonl", "--shard", "1/2"], "--merge"),
    (["eval", "--merge", "nope.jsonl"], "no such predictions file"),
])
def test_eval_refuses_bad_shard_and_merge_flags(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, needle)


def test_compress_refuses_a_missing_decontamination_benchmark(capsys, tiny_dirs, corpus_dir, tmp_path):
    code, _, err = run(capsys, "compress", "--teacher", str(tiny_dirs["gpt2"]), "--method", "layer",
                       "--data", str(corpus_dir), "--out", str(tmp_path / "o"), "--decontaminate", str(tmp_path / "b.jsonl"))
    assert_one_line_error(code, err, "--decontaminate", "b.jsonl")


def test_bench_reports_the_spec_fields(capsys, packed_dir, tmp_path):
    prompt = tmp_path / "prompt.py"
    prompt.write_text("import os\n" * 200)
    result = run_json(capsys, "bench", "--model", str(packed_dir), "--prompt-file", str(prompt), "--prompt-tokens", "40",
                      "--new-tokens", "4", "--repeats", "1", "--json")
    for key in ("model", "disk_mb", "rss_mb", "prefill_tokens_per_s", "decode_tokens_per_s", "latency_ms", "warm_latency_ms"):
        assert key in result
    assert result["latency_ms"] > 0 and result["disk_mb"] > 0


def test_build_benchmark(capsys, corpus_dir, tmp_path):
    out = tmp_path / "b.jsonl"
    code, stdout, _ = run(capsys, "build-benchmark", "--source", str(corpus_dir), "--out", str(out), "--n", "5", "--seed", "3")
    assert code == 0
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(items) == 5 and all(item["gt"] for item in items)


def test_install_list_and_default(capsys, tiny_dirs, packed_dir):
    assert run_json(capsys, "list", "--json") == []
    code, out, _ = run(capsys, "install", str(packed_dir), "--name", "tiny-hybrid")
    assert code == 0 and "installed" in out
    code, out, _ = run(capsys, "install", str(packed_dir), "--name", "tiny-hybrid")
    assert code == 0 and "already installed" in out
    run(capsys, "install", str(tiny_dirs["gpt2"]), "--name", "tiny-gpt2", "--default")
    rows = {r["name"]: r for r in run_json(capsys, "list", "--json")}
    assert set(rows) == {"tiny-hybrid", "tiny-gpt2"}
    assert rows["tiny-gpt2"]["default"] and not rows["tiny-hybrid"]["default"]
    assert 0 < rows["tiny-hybrid"]["disk_mb"] < rows["tiny-gpt2"]["disk_mb"]
    # an installed name is a model SRC
    from xtc.train.load import load_model

    assert load_model("tiny-hybrid").packed


# -- bad input: one line on stderr, non-zero exit, no traceback ---------------------------------

def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_missing_model_path(capsys, benchmark_file):
    code, _, err = run(capsys, "eval", "--model", "/no/such/model", "--benchmark", str(benchmark_file))
    assert_one_line_error(code, err, "no model")


def test_unknown_architecture_names_what_is_supported(capsys, tmp_path, benchmark_file):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code, _, err = run(capsys, "eval", "--model", str(tmp_path), "--benchmark", str(benchmark_file))
    assert_one_line_error(code, err, "bert", "gpt2", "llama")


def test_corrupt_weights(capsys, tmp_path, packed_dir, tiny_dirs, benchmark_file):
    for source in (packed_dir, tiny_dirs["gpt2"]):
        broken = tmp_path / source.name
        shutil.copytree(source, broken)
        (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
        code, _, err = run(capsys, "eval", "--model", str(broken), "--benchmark", str(benchmark_file))
        assert_one_line_error(code, err, str(broken))


def test_not_a_gguf_file(capsys, tmp_path, benchmark_file):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"NOPE" + b"\x00" * 100)
    code, _, err = run(capsys, "eval", "--model", str(fake), "--benchmark", str(benchmark_file))
    assert_one_line_error(code, err, "GGUF")


def test_hub_id_offline_fails_fast_with_a_clear_message(capsys, benchmark_file):
    code, _, err = run(capsys, "eval", "--model", "microsoft/CodeGPT-small-py", "--benchmark", str(benchmark_file))
    assert_one_line_error(code, err, "hub")


def test_malformed_benchmark(capsys, tmp_path, packed_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x = ", "gt": "1"}\nnot json\n')
    code, _, err = run(capsys, "eval", "--model", str(packed_dir), "--benchmark", str(bad))
    assert_one_line_error(code, err, "bad.jsonl:2")


@pytest.mark.parametrize("argv", [
    ["compress", "--teacher", "x", "--method", "magic", "--data", ".", "--out", "o"],
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--weight-bits", "5"],
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--weight-format-for", "down=int9"],
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--steps", "-5"],
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--quant-warmup", "1.5"],
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--e2e-share", "-0.1"],
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--target-mb", "0"],
    ["bench", "--model", "x", "--prompt-tokens", "many"],
    ["frobnicate"],
])
def test_bad_flags(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err)
    assert code == 2


COMPRESS = ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o"]


@pytest.mark.parametrize(("flag", "value"), [
    *[(flag, value) for flag in ("--lr", "--block-lr", "--temperature", "--time-budget", "--target-mb")
      for value in ("nan", "inf", "-inf", "1e999", "0", "-1")],
    *[(flag, value) for flag in ("--hidden-weight", "--attn-weight") for value in ("nan", "inf", "-1", "-0.5")],
    ("--e2e-steps", "-5"), ("--e2e-steps", "0"), ("--seq-len", "nan"), ("--quant-warmup", "nan"),
])
def test_number_flags_refuse_non_finite_and_out_of_range_values(capsys, flag, value):
    code, _, err = run(capsys, *COMPRESS, f"{flag}={value}")
    assert_one_line_error(code, err, flag)
    assert code == 2


def test_loss_weights_take_zero_and_positive_values():
    from xtc.cli import build_parser

    args = build_parser().parse_args([*COMPRESS, "--hidden-weight", "0", "--attn-weight", "2.5"])
    assert (args.hidden_weight, args.attn_weight) == (0.0, 2.5)


def test_missing_data_directory(capsys, tiny_dirs, tmp_path):
    code, _, err = run(capsys, "compress", "--teacher", str(tiny_dirs["gpt2"]), "--method", "layer",
                       "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "not a directory")


def test_console_script_and_module_entry_points(tmp_path):
    env = {**os.environ, "XTC_HOME": str(tmp_path)}
    for cmd in (["xtc"], [sys.executable, "-m", "xtc"]):
        exe = shutil.which(cmd[0]) or os.path.join(os.path.dirname(sys.executable), cmd[0])
        proc = subprocess.run([exe, *cmd[1:], "list", "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and json.loads(proc.stdout) == []
    proc = subprocess.run([sys.executable, "-m", "xtc", "eval", "--model", "nope", "--benchmark", "x"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_eval_workspace_refuses_a_missing_folder_and_items_without_a_path(tmp_path, tiny_dirs):
    bench = tmp_path / "b.jsonl"
    bench.write_text('{"input": "x = ", "gt": "1"}\n')
    for args, message in ((["--workspace", str(tmp_path / "nowhere")], "no such directory"),
                          (["--workspace", str(tmp_path)], "has no \"path\"")):
        r = subprocess.run([sys.executable, "-m", "xtc.cli", "eval", "--model", str(tiny_dirs["gpt2"]), "--benchmark",
                            str(bench), *args], capture_output=True, text=True)
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_eval_workspace_reports_the_context_and_never_shows_the_items_own_file(tmp_path, tiny_dirs):
    from xtc.eval.editor import editor_completion, open_workspace
    from xtc.infer.complete import Completer
    from xtc.infer.runtime import load_runtime

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "own.py").write_text("def secret_answer_here():\n    return 42\n")
    (tmp_path / "pkg" / "other.py").write_text("def helper_function(value):\n    return value\n")
    item = {"input": "def f(value):\n    return helper_function(value)\nx = ", "gt": "secret_answer_here()",
            "suffix": "", "path": "pkg/own.py"}
    completer = Completer(load_runtime(str(tiny_dirs["gpt2"])))
    workspace, described = open_workspace(completer, tmp_path, [item])
    assert described["files"] == 2 and described["workspace"] == str(tmp_path)
    block = workspace.context("pkg/own.py", item["input"])
    assert "helper_function" in block.text and "secret_answer_here" not in block.text
    assert isinstance(editor_completion(completer, workspace)(item["input"], "\n", "pkg/own.py").text, str)


def test_compress_rejects_negative_counts_and_xtc_only_flags_with_blockwise(tmp_path):
    import subprocess, sys
    base = [sys.executable, "-m", "xtc", "compress", "--teacher", "t", "--method", "hybrid", "--data", str(tmp_path),
            "--out", str(tmp_path / "o")]
    for extra in (["--e2e-steps", "-5"], ["--eval-every", "-1"], ["--recipe", "blockwise", "--eval-every", "5"]):
        r = subprocess.run(base + extra, capture_output=True, text=True)
        assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_train_command_without_the_train_extra_says_what_to_install(tmp_path):
    import subprocess, sys
    blocker = ("import sys\nclass B:\n    def find_spec(self, name, *a):\n"
               "        if name.partition('.')[0] in ('torch', 'transformers'): raise ModuleNotFoundError(name=name)\n"
               "sys.meta_path.insert(0, B())\nfrom xtc.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", blocker, "compress", "--teacher", "t", "--method", "hybrid", "--data",
                        str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 1 and "pip install 'codegpt-xtc[train]'" in r.stderr and "Traceback" not in r.stderr, r.stderr


# `xtc compress`'s flags as they were before the flags were put in groups by recipe (issue 23), taken from
# the parser of that day: flag -> (default, type, choices, nargs, required, action). The grouping may change
# how --help reads, never a flag.
COMPRESS_FLAGS = {
    '--teacher': (None, None, None, None, True, '_StoreAction'),
    '--method': (None, None, ['layer', 'quant', 'hybrid'], None, True, '_StoreAction'),
    '--data': (None, 'Path', None, '+', True, '_StoreAction'),
    '--out': (None, 'Path', None, None, True, '_StoreAction'),
    '--recipe': ('blockwise', None, ['blockwise', 'xtc'], None, False, '_StoreAction'),
    '--device': ('auto', None, ['auto', 'cpu', 'cuda'], None, False, '_StoreAction'),
    '--steps': (200, '_steps', None, None, False, '_StoreAction'),
    '--time-budget': (None, '_positive(float)', None, None, False, '_StoreAction'),
    '--seq-len': (256, '_positive(int)', None, None, False, '_StoreAction'),
    '--batch-size': (8, '_positive(int)', None, None, False, '_StoreAction'),
    '--lr': (0.0002, '_positive(float)', None, None, False, '_StoreAction'),
    '--keep-layers': ('odd', None, None, None, False, '_StoreAction'),
    '--student-layers': (None, '_positive(int)', None, None, False, '_StoreAction'),
    '--weight-bits': (None, 'int', [1, 2, 3, 4], None, False, '_StoreAction'),
    '--weight-format': (None, None, ['binary', 'ternary', 'int2', 'int3', 'int4'], None, False, '_StoreAction'),
    '--weight-format-for': ({}, '_format_map', None, None, False, '_StoreAction'),
    '--target-mb': (None, '_positive(float)', None, None, False, '_StoreAction'),
    '--act-bits': (8, '_act_bits', None, None, False, '_StoreAction'),
    '--group-size': (None, '_positive(int)', None, None, False, '_StoreAction'),
    '--embed-bits': (8, 'int', [4, 8], None, False, '_StoreAction'),
    '--embed-group': (None, '_positive(int)', None, None, False, '_StoreAction'),
    '--temperature': (1.0, '_positive(float)', None, None, False, '_StoreAction'),
    '--hidden-weight': (1.0, '_weight', None, None, False, '_StoreAction'),
    '--attn-weight': (0.0, '_weight', None, None, False, '_StoreAction'),
    '--max-tokens': (5000000, '_positive(int)', None, None, False, '_StoreAction'),
    '--decontaminate': (None, None, None, None, False, '_StoreAction'),
    '--cache-tokens': (131072, '_positive(int)', None, None, False, '_StoreAction'),
    '--topk': (64, '_positive(int)', None, None, False, '_StoreAction'),
    '--cache-dir': (None, 'Path', None, None, False, '_StoreAction'),
    '--block-inputs': ('student', None, ['student', 'teacher'], None, False, '_StoreAction'),
    '--block-lr': (0.0001, '_positive(float)', None, None, False, '_StoreAction'),
    '--e2e': ('scales', None, ['scales', 'all', 'none'], None, False, '_StoreAction'),
    '--e2e-steps': (None, '_positive(int)', None, None, False, '_StoreAction'),
    '--init': ('rtn', None, ['rtn', 'gptq'], None, False, '_StoreAction'),
    '--quant-warmup': (0.0, '_fraction', None, None, False, '_StoreAction'),
    '--e2e-share': (0.3, '_fraction', None, None, False, '_StoreAction'),
    '--eval-every': (None, '_count', None, None, False, '_StoreAction'),
    '--checkpoint-every': (None, '_count', None, None, False, '_StoreAction'),
    '--seed': (0, 'int', None, None, False, '_StoreAction'),
    '--resume': (False, None, None, 0, False, '_StoreTrueAction'),
    '--keep-checkpoints': (False, None, None, 0, False, '_StoreTrueAction'),
    '--json': (False, None, None, 0, False, '_StoreTrueAction'),
}


def _compress_flags() -> dict:
    from xtc.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))

    def kind(t):
        if t is None:
            return None
        if getattr(t, "__closure__", None):  # _positive(int) and the like
            return f"{t.__qualname__.split('.')[0]}({t.__closure__[0].cell_contents.__name__})"
        return t.__name__

    return {a.option_strings[0]: (a.default, kind(a.type), a.choices and list(a.choices), a.nargs, a.required,
                                  type(a).__name__)
            for a in sub.choices["compress"]._actions if not isinstance(a, argparse._HelpAction)}


def test_compress_flags_unchanged():
    assert _compress_flags() == COMPRESS_FLAGS  # the same flags, defaults and types, in any order


def test_every_compress_flag_sets_the_config_field_of_its_name():
    """A flag reaches CompressOptions or TrainConfig by its name (cmd_compress), so a renamed field must not
    silently drop a flag: each is a field, or one of the few cmd_compress converts."""
    from dataclasses import fields

    from xtc.cli import CONVERTED_FLAGS
    from xtc.train.distill import TrainConfig
    from xtc.train.pipeline import CompressOptions

    names = {f.name for cls in (CompressOptions, TrainConfig) for f in fields(cls)}
    dests = {flag.lstrip("-").replace("-", "_") for flag in COMPRESS_FLAGS}
    assert dests - names == CONVERTED_FLAGS
