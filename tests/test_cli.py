"""Every `xtc` command, as a user calls it, and the bad inputs the SPEC lists."""

from __future__ import annotations

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
    from xtc.eval.quality import build_benchmark, write_benchmark

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
                 "--out", str(out), "--steps", "3", "--seq-len", "32", "--batch-size", "2", "--max-tokens", "20000",
                 "--device", "cpu", "--json"])
    assert code == 0
    return out


def test_compress_writes_a_packed_model_and_a_summary(packed_dir):
    config = json.loads((packed_dir / "config.json").read_text())
    assert config["xtc"]["method"] == "hybrid" and config["xtc"]["weight_bits"] == 1 and config["xtc"]["act_bits"] == 8
    assert config["xtc"]["kept_layers"] == [1, 3] and config["num_hidden_layers"] == 2
    summary = json.loads((packed_dir / "training" / "summary.json").read_text())
    assert summary["ratio"] > 1 and summary["packed_mb"] < summary["teacher_fp32_mb"]
    assert [s["stage"] for s in summary["stages"]] == ["layer", "quant"]


def test_eval_reports_the_spec_fields(capsys, packed_dir, benchmark_file):
    result = run_json(capsys, "eval", "--model", str(packed_dir), "--benchmark", str(benchmark_file), "--limit", "2", "--json")
    assert {"model", "n", "exact_match", "edit_similarity", "score", "seconds"} <= set(result)
    assert result["n"] == 2
    assert 0 <= result["exact_match"] <= 100 and 0 <= result["edit_similarity"] <= 100
    assert result["score"] == pytest.approx((result["exact_match"] + result["edit_similarity"]) / 2)


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
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--weight-bits", "3"],
    ["compress", "--teacher", "x", "--method", "quant", "--data", ".", "--out", "o", "--steps", "-5"],
    ["bench", "--model", "x", "--prompt-tokens", "many"],
    ["frobnicate"],
])
def test_bad_flags(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err)
    assert code == 2


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
