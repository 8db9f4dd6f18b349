"""scripts/gpu/run.py, the driver of the GPU run (docs/GPU-RUN.md): its pure parts, fast, without
a GPU or a model. The whole driver's CPU dry run takes minutes and is documented, not run here."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import sysconfig
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu" / "run.py"


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_stages_and_profiles(run, tmp_path):
    a = run.parse_args(["--stage", "all", "--out-dir", str(tmp_path)])
    assert a.stages == run.STAGES and a.device == "cuda" and a.embed_bits == 4 and a.limit == 200
    a = run.parse_args(["--stage", "report,layer", "--dry-run", "--out-dir", str(tmp_path), "--limit", "3"])
    assert a.stages == ["layer", "report"] and a.device == "cpu" and a.limit == 3
    with pytest.raises(SystemExit):
        run.parse_args(["--stage", "train", "--out-dir", str(tmp_path)])


def test_shards_cover_every_item_once(run):
    seen = sorted(i for k in range(4) for i in run.shard_indices(10, k, 4))
    assert seen == list(range(10))


def test_decontamination_finds_a_benchmark_item(run):
    items = run.load_items(run.BENCHMARK)[:5]
    keys = run.item_keys(items)
    assert len(keys) == 5
    item = items[0]
    copy = item["input"] + item["gt"] + "\n" + item.get("suffix", "")
    assert run.file_has_key("# vendored\n" + copy.replace("\n", "\n\n"), keys)  # blank lines do not hide it
    assert not run.file_has_key("def f():\n    return 1\n\nx = f()\n", keys)


def test_corpus_never_takes_the_standard_library(run):
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    assert run.candidate_files([stdlib / "json"]) == []
    assert all(d.resolve() != stdlib.resolve() for d in run.default_site_dirs())


def test_split_and_join_round_trip(run, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "PART_BYTES", 1000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 10)
    out = tmp_path / "parts"
    out.mkdir()
    parts = run.split_into(blob, out, "blob.bin")
    assert [p.name for p in parts] == ["blob.bin.part-aa", "blob.bin.part-ab", "blob.bin.part-ac"]
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert run.join_parts(parts, tmp_path / "joined", sha) == sha
    assert (tmp_path / "joined").read_bytes() == blob.read_bytes()
    with pytest.raises(SystemExit, match="missing or damaged"):
        run.join_parts(parts[:2], tmp_path / "joined2", sha)
    assert not (tmp_path / "joined2").exists()


def test_planned_steps_fit_the_budget(run):
    steps, overhead = run.planned_steps(300, 0.1, 24_000_000, 2_000_000, 20, 20)
    assert overhead == pytest.approx(20 + 13.2 + 20)
    assert steps * 0.1 + overhead < 300
    assert run.planned_steps(10, 1.0, 1000, 1000, 5, 5)[0] == 10  # never fewer than 10


def _fake_run(run, tmp_path, n_items=4):
    """A work dir as the stages leave it: a teacher, three finished students, predictions."""
    a = run.parse_args(["--stage", "report", "--dry-run", "--out-dir", str(tmp_path / "out"),
                        "--work", str(tmp_path / "work"), "--limit", str(n_items)])
    P = run.Paths(a.work, a.out_dir)
    items = run.load_items(run.BENCHMARK)
    layers = {"teacher": 4, "layer": 2, "quant": 4, "hybrid": 2}
    sizes = {"teacher": 4000, "layer": 2000, "quant": 300, "hybrid": 150}
    for name in run.MODELS:
        d = P.model_dir(name)
        d.mkdir(parents=True)
        cfg = {"num_hidden_layers": layers[name]}
        if name in ("quant", "hybrid"):
            cfg["xtc"] = {"weight_bits": 1, "act_bits": 8, "embed_bits": 4}
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "model.safetensors").write_bytes(b"\0" * sizes[name])
        if name != "teacher":
            stages = [{"stage": "layer" if name != "quant" else "quant", "steps": 5, "finished": True, "seconds": 6.0,
                       "final_train_loss": 1.0, "val_lm_loss": 2.0}]
            run.write_json(P.done_marker(name), {"teacher_fp32_mb": 0.004, "stages": stages, "plan": {"batch_size": 4}})
            (d / "training").mkdir()
            (d / "training" / f"log.{stages[0]['stage']}.jsonl").write_text(
                "\n".join(json.dumps({"stage": stages[0]["stage"], "step": s, "loss": 3.0 / s}) for s in range(1, 6)))
        shard = P.evals / name / "shard-0-of-1.jsonl"
        shard.parent.mkdir(parents=True)
        # teacher and quant right on every item; layer and hybrid right on half of them
        preds = [it["gt"] if name in ("teacher", "quant") or i % 2 == 0 else "" for i, it in enumerate(items[:n_items])]
        shard.write_text("\n".join(json.dumps({"i": i, "pred": p, "s": 0.1}) for i, p in enumerate(preds)))
    return a, P


def test_report_scores_the_same_items_and_ships_models(run, tmp_path):
    a, P = _fake_run(run, tmp_path)
    run.write_report(a, P, with_models=True)
    metrics = json.loads((P.out / "metrics.json").read_text())
    m = metrics["models"]
    assert metrics["benchmark"]["n_common"] == 4
    assert m["teacher"]["eval"]["score"] == 100.0 and m["hybrid"]["eval"]["exact_match"] == 50.0
    assert m["hybrid"]["reduction"] == pytest.approx(4000 / 150, rel=1e-3)
    assert metrics["goals"] == {"hybrid_at_least_20x_smaller": True, "hybrid_at_least_90pct_score": False}
    assert set(metrics["shipped"]) == {"hybrid", "quant"}
    names = sorted(f.name for f in P.out.iterdir())
    assert names == ["hybrid.tar.gz.part-aa", "logs.tar.gz", "losses.png", "metrics.json", "quant.tar.gz.part-aa",
                     "results.md"]
    table = (P.out / "results.md").read_text()
    assert "| hybrid (2 layers + W1A8, 4-bit embeddings) | 2 | 1-bit / 8-bit | 4-bit |" in table
    assert "26.7x" in table


def test_report_uses_only_items_every_model_has(run, tmp_path):
    a, P = _fake_run(run, tmp_path)
    lines = (P.evals / "hybrid" / "shard-0-of-1.jsonl").read_text().splitlines()
    (P.evals / "hybrid" / "shard-0-of-1.jsonl").write_text("\n".join(lines[:2]))  # a call cut short
    run.write_report(a, P, with_models=False)
    metrics = json.loads((P.out / "metrics.json").read_text())
    assert metrics["benchmark"]["n_common"] == 2 and metrics["models"]["teacher"]["eval"]["n"] == 2
    assert not any(".part-" in f.name for f in P.out.iterdir())
