"""scripts/gpu/run.py, the GPU run as a plan of `xtc` calls (docs/GPU-RUN.md): its arguments and
teacher parts, and the whole plan dry-run on the CPU with a tiny teacher and tiny budgets."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu" / "run.py"


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = module
    spec.loader.exec_module(module)
    return module


def test_stages_rows_and_profiles(run, tmp_path):
    a = run.parse_args(["--stage", "all", "--out-dir", str(tmp_path), "--data", str(tmp_path)])
    assert a.stages == run.STAGES and a.rows == run.GPU_ROWS and a.device == "cuda" and a.steps == "auto"
    a = run.parse_args(["--stage", "report,compress", "--dry-run", "--out-dir", str(tmp_path), "--data", str(tmp_path),
                        "--limit", "3", "--rows", "int2-cut,int4"])
    assert a.stages == ["compress", "report"] and a.rows == ["int2-cut", "int4"] and a.device == "cpu" and a.limit == 3
    for bad in (["--stage", "train"], ["--stage", "all", "--rows", "int1"]):
        with pytest.raises(SystemExit):
            run.parse_args([*bad, "--out-dir", str(tmp_path)])


def test_one_row_table_and_one_xtc_runner_for_both_frontier_runs(run):
    spec = importlib.util.spec_from_file_location("frontier", SCRIPT.parents[2] / "benchmarks" / "frontier.py")
    frontier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frontier)
    assert frontier.ROWS is run.ROWS and frontier.BENCHMARK == run.BENCHMARK
    assert frontier.xtc.__module__ == run.xtc_run.__module__ == "benchmarks.frontier_rows"
    assert set(run.GPU_ROWS) | set(frontier.CPU_ROWS) == set(run.ROWS)


def test_every_row_is_one_blockwise_compress_call(run, tmp_path):
    a = run.parse_args(["--stage", "compress", "--out-dir", str(tmp_path), "--data", str(tmp_path)])
    cmd = run.compress_cmd(a, "int2-cut", 1.5, resume=True)
    assert cmd[1:4] == ["-m", "xtc", "compress"]
    text = " ".join(cmd)
    for flags in ("--recipe blockwise", "--keep-layers auto", "--weight-format int2", "--steps auto",
                  "--time-budget 1.50", "--device cuda", f"--cache-dir {a.work / 'cache'}",
                  f"--decontaminate {run.BENCHMARK}", "--resume"):
        assert flags in text
    assert "--resume" not in run.compress_cmd(a, "int4", 1.5, resume=False)
    assert run.site_dirs() and all("site-packages" in str(d) or "dist-packages" in str(d) for d in run.site_dirs())


def test_teacher_parts_join_with_their_checksum_and_results_split(run, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "PART_BYTES", 1000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 10)
    (tmp_path / "parts").mkdir()
    parts = run.split_into(blob, tmp_path / "parts", "blob.bin")
    assert [p.name for p in parts] == ["blob.bin.part-aa", "blob.bin.part-ab", "blob.bin.part-ac"]
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert run.join_parts(parts, tmp_path / "joined", sha) == sha
    assert (tmp_path / "joined").read_bytes() == blob.read_bytes()
    with pytest.raises(SystemExit, match="missing or damaged"):
        run.join_parts(parts[:2], tmp_path / "joined2", sha)
    assert not (tmp_path / "joined2").exists()


def test_the_plan_dry_runs_on_the_cpu_and_resumes(run, tiny_dirs, corpus_dir, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--dry-run", "--teacher", str(tiny_dirs["llama"]), "--data", str(corpus_dir), "--rows", "int2-cut",
            "--work", str(work), "--out-dir", str(out), "--limit", "4", "--shards", "2"]
    assert run.main(["--stage", "teacher,compress,eval,report", *argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    teacher, row = metrics["models"]["teacher"], metrics["models"]["int2-cut"]
    assert teacher["eval"]["n"] == 4 and row["eval"]["n"] == 4 and row["eval"]["model"].endswith("int2-cut")
    assert row["layers"] == 3 and teacher["layers"] == 4  # --keep-layers auto: three quarters
    assert row["finished"] and row["reduction"] > 5 and row["retention"] == pytest.approx(
        row["eval"]["score"] / teacher["eval"]["score"], abs=1e-4)
    assert "files dropped that hold items of line_completion_stdlib.jsonl" in row["summary"]["corpus"]
    table = (out / "results.md").read_text()
    assert "| teacher | fp32 | 4 |" in table and "| int2-cut | --method hybrid --keep-layers auto" in table
    assert sorted(f.name for f in out.iterdir()) == ["int2-cut.tar.gz.part-aa", "logs.tar.gz", "metrics.json",
                                                     "results.md"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert "training/int2-cut/loss_curve.png" in names and "eval/int2-cut/shard-2-of-2.jsonl" in names
    preds = [json.loads(x) for x in (work / "eval" / "int2-cut" / "shard-2-of-2.jsonl").read_text().splitlines()]
    assert [p["index"] for p in preds] == [1, 3]

    # a later call: the finished row and the finished evaluations are not redone
    eval_logs = {f.name: f.stat().st_size for f in (work / "logs").glob("eval-*.log")}
    assert run.main(["--stage", "compress,eval,report", *argv]) == 0
    assert "int2-cut: already done" in capsys.readouterr().out
    assert (work / "logs" / "compress-int2-cut.log").read_text().count("$ ") == 1
    assert {f.name: f.stat().st_size for f in (work / "logs").glob("eval-*.log")} == eval_logs
    assert json.loads((out / "metrics.json").read_text())["models"]["int2-cut"]["eval"] == row["eval"]
