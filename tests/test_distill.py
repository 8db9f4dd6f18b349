"""Distillation: XTC's losses, and that training makes the student imitate the teacher."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from xtc.train.data import build_corpus, sample_batch, split_files, python_files
from xtc.train.distill import TrainConfig, distill, evaluate, hidden_mse, layer_map, lr_lambda, soft_cross_entropy
from xtc.train.pipeline import CompressOptions, build_student, compress


def test_soft_cross_entropy_is_smallest_when_student_matches_teacher():
    teacher = torch.randn(2, 5, 11)
    same = soft_cross_entropy(teacher, teacher)
    other = soft_cross_entropy(torch.randn(2, 5, 11), teacher)
    entropy = -(teacher.softmax(-1) * teacher.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(same, entropy, atol=1e-5)  # CE(p, p) is p's entropy, its minimum
    assert other > same
    # temperature softens both sides and rescales by T^2
    assert torch.allclose(soft_cross_entropy(teacher, teacher, 2.0),
                          4 * -((teacher / 2).softmax(-1) * (teacher / 2).log_softmax(-1)).sum(-1).mean(), atol=1e-5)


def test_hidden_states_are_matched_to_the_kept_teacher_layers():
    assert layer_map([1, 3, 5]) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    h = [torch.ones(1, 2, 4) * i for i in range(7)]
    student = [h[0], h[2], h[4], h[6]]  # embeddings, then the outputs of teacher layers 1, 3, 5
    assert hidden_mse(student, h, layer_map([1, 3, 5])) == 0
    assert hidden_mse(student, h, [(1, 1)]) > 0


def test_schedule_warms_up_then_decays_to_zero():
    f = lr_lambda(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == 0


def test_corpus_splits_by_file_and_never_mixes(corpus_dir, tokenizer):
    train, val = split_files(python_files([corpus_dir]))
    assert val and train and not set(train) & set(val)
    corpus = build_corpus([corpus_dir], tokenizer, max_tokens=20_000)
    assert len(corpus.train) == 20_000 and len(corpus.val) > 0
    batch = sample_batch(corpus.train, 3, 16, torch.Generator().manual_seed(0))
    assert batch.shape == (3, 16)


def test_the_split_is_the_same_wherever_the_tree_lives(tmp_path, monkeypatch, tokenizer):
    """`--data corpus` and `--data /abs/path/corpus` (or a copy of the tree elsewhere) split alike:
    the split hashes each file's path relative to its --data root."""
    import shutil

    from xtc.train import data

    tree = tmp_path / "a" / "corpus"
    for i in range(60):
        (tree / f"pkg{i % 3}").mkdir(parents=True, exist_ok=True)
        (tree / f"pkg{i % 3}" / f"mod{i}.py").write_text(f"value_{i} = {i}\n")
    shutil.copytree(tree, tmp_path / "b" / "elsewhere" / "corpus")
    seen = []
    monkeypatch.setattr(data, "tokenize_files", lambda files, *args, **kwargs: seen.append(files) or torch.zeros(1))

    def split(root):
        seen.clear()
        build_corpus([root], tokenizer, val_fraction=0.2)
        return [sorted(f.relative_to(root).as_posix() for f in files) for files in seen]

    absolute = split(tree)
    monkeypatch.chdir(tmp_path)
    assert split(tree.relative_to(tmp_path)) == absolute
    assert split(tmp_path / "b" / "elsewhere" / "corpus") == absolute
    train, val = absolute
    assert train and val and len(train) + len(val) == 60


def test_resume_continues_the_random_state(corpus_dir, tokenizer, tmp_path, monkeypatch):
    """A run killed after a checkpoint and resumed draws the same random numbers (dropout) from
    there on as the run that was never killed: the checkpoint's RNG state is restored."""
    import copy

    from tests.tiny import build_model
    from xtc.train import distill as distill_module

    teacher, _ = build_model("gpt2", layers=2, width=32, heads=2, tokenizer=tokenizer)  # dropout 0.1
    corpus = build_corpus([corpus_dir], tokenizer, max_tokens=5_000)
    cfg = TrainConfig(steps=4, seq_len=16, batch_size=2, eval_every=0, checkpoint_every=2, device="cpu", progress=False)
    real_sample = distill_module.sample_batch

    class Killed(Exception):
        pass

    def run(states: list, kill_at: int | None) -> None:
        def sample(*args, **kwargs):
            states.append(torch.get_rng_state())
            if len(states) == kill_at:
                raise Killed()
            return real_sample(*args, **kwargs)

        monkeypatch.setattr(distill_module, "sample_batch", sample)
        distill(teacher, copy.deepcopy(teacher), corpus, [0, 1], cfg, tmp_path / "ckpt.pt", tmp_path / "log.jsonl")

    killed: list = []
    torch.manual_seed(1)
    with pytest.raises(Killed):
        run(killed, kill_at=3)  # killed before step 3, after the checkpoint of step 2
    resumed: list = []
    torch.manual_seed(12345)  # a new process starts from another state
    run(resumed, kill_at=None)
    assert len(resumed) == 2 and torch.equal(resumed[0], killed[2])


@pytest.mark.parametrize("method", ["hybrid", "quant"])
def test_distillation_lowers_the_students_loss(tiny_dirs, arch, corpus_dir, tokenizer, tmp_path, method):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_dirs[arch]).eval()
    plan = ["layer", "quant"] if method == "hybrid" else ["quant"]
    student, kept = build_student(teacher, CompressOptions(method=method, recipe="xtc"), plan)
    corpus = build_corpus([corpus_dir], tokenizer, max_tokens=30_000)
    cfg = TrainConfig(steps=40, seq_len=32, batch_size=4, lr=1e-3, eval_every=0, checkpoint_every=0,
                      device="cpu", progress=False)
    before = evaluate(teacher, student, corpus, kept, cfg, "cpu")["val_kd_loss"]
    result = distill(teacher, student, corpus, kept, cfg, tmp_path / "ckpt.pt", tmp_path / "log.jsonl")
    assert result.finished and result.steps_done == 40
    assert result.val["val_kd_loss"] < before  # held-out files: closer to the teacher
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {"kd", "hidden", "loss", "lr"} <= set(rows[0])
    first, last = (sum(r["loss"] for r in part) / 10 for part in (rows[:10], rows[-10:]))
    assert last < first  # the training objective went down


def test_compress_resumes_an_interrupted_run(tiny_dirs, corpus_dir, tmp_path):
    out = tmp_path / "out"
    cfg = dict(seq_len=32, batch_size=2, eval_every=0, checkpoint_every=2, device="cpu", progress=False)
    # A zero time budget stops the run before its first step: what a killed run leaves behind
    opts = CompressOptions(method="hybrid", recipe="xtc", keep_checkpoints=True, max_tokens=20_000,
                           train=TrainConfig(steps=4, time_budget_s=1e-9, **cfg))
    first = compress(str(tiny_dirs["gpt2"]), [corpus_dir], out, opts)
    assert [s["finished"] for s in first["stages"]] == [False, False]
    assert (out / "checkpoints" / "layer.pt").exists()
    with pytest.raises(Exception, match="--resume"):
        compress(str(tiny_dirs["gpt2"]), [corpus_dir], out, CompressOptions(method="hybrid", recipe="xtc", train=TrainConfig(**cfg)))
    resumed = compress(str(tiny_dirs["gpt2"]), [corpus_dir], out,
                       CompressOptions(method="hybrid", recipe="xtc", resume=True, max_tokens=20_000, train=TrainConfig(steps=4, **cfg)))
    assert [(s["steps"], s["finished"]) for s in resumed["stages"]] == [(4, True), (4, True)]
    assert not (out / "checkpoints").exists()  # cleaned up once the packed model is complete
    assert (out / "training" / "loss_curve.png").stat().st_size > 1000
    assert resumed["ratio"] > 1
