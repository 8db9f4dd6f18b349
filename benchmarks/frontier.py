"""The frontier: what each compression budget buys, every row made the same way in one run.

    .venv/bin/python benchmarks/frontier.py --teacher smollm2 --data .venv/lib/python3.11/site-packages \
        --minutes 30 --limit 200 --out runs/frontier

Each row is one `xtc compress --recipe blockwise --steps auto --time-budget MINUTES` (all rows share
one teacher cache, built by the first), then `xtc eval` on the first --limit items of the shipped
benchmark and `xtc bench` (cold and warm latency). The teacher is evaluated and benched the same
way. A row whose teacher has a pruned vocabulary (VOCAB) gets that teacher made once (`xtc
prune-vocab`), measured beside the teacher, and its own teacher cache. Results go to
OUT/frontier.json, OUT/frontier.md (the table of docs/results.md) and OUT/curves.png (every row's block and
end-to-end losses). A killed run continues where it stopped when started again:
finished rows are kept, an unfinished compression continues with --resume.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = ROOT / "benchmarks" / "data" / "line_completion_stdlib.jsonl"

# name -> extra `xtc compress` arguments. Embeddings 4-bit in groups of 96 for every row, and the 2-bit
# full-depth row's weights in groups of 192: what fits a shipped model's 50 MB (docs/results.md).
ROWS = {
    "hybrid-binary-15L": ["--method", "hybrid", "--keep-layers", "odd", "--weight-format", "binary"],
    "binary-30L": ["--method", "quant", "--weight-format", "binary", "--group-size", "64"],
    "int2-30L": ["--method", "quant", "--weight-format", "int2", "--group-size", "192"],
    "int2-23L": ["--method", "hybrid", "--keep-layers", "auto", "--student-layers", "23", "--weight-format", "int2",
                 "--group-size", "64"],
    "int3-30L": ["--method", "quant", "--weight-format", "int3", "--group-size", "64"],
    "int4-30L": ["--method", "quant", "--weight-format", "int4", "--group-size", "64"],
    "int3-22L": ["--method", "hybrid", "--keep-layers", "auto", "--student-layers", "22", "--weight-format", "int3",
                 "--group-size", "192"],
    # full depth in 50 MB: the teacher's vocabulary pruned to the 16,384 tokens the corpus uses most
    # (docs/results.md), every block matrix int2, int3 or int4 by measured sensitivity
    "mixed-30L-v16k": ["--method", "quant", "--weight-format", "int2", "--group-size", "192", "--target-mb", "49.0",
                       "--embed-group", "32", "--quant-warmup", "0.5"],
}
# rows whose teacher is first pruned to the tokens the corpus uses most (`xtc prune-vocab`): name -> tokens kept
VOCAB = {"mixed-30L-v16k": 16384}
COMMON = ["--recipe", "blockwise", "--embed-bits", "4", "--embed-group", "96", "--steps", "auto", "--seq-len", "512",
          "--batch-size", "4"]


def xtc(*args: str, log: Path | None = None) -> dict:
    """Run `xtc ... --json` and return its JSON object (stderr to `log`)."""
    cmd = [sys.executable, "-m", "xtc", *args, "--json"]
    with open(log or "/dev/null", "a") as err:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}; see {log}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(model: str, args, log: Path) -> dict:
    quality = xtc("eval", "--model", model, "--benchmark", str(args.benchmark), "--limit", str(args.limit), log=log)
    speed = xtc("bench", "--model", model, log=log)
    return {"quality": quality, "speed": speed}


def pruned_teacher(size: int, args, out: Path) -> tuple[Path, dict]:
    """The teacher with its vocabulary pruned to `size` tokens (made once), and its measurements."""
    path, result_file = out / f"teacher-v{size}", out / f"teacher-v{size}.json"
    if not result_file.exists():
        log = out / f"teacher-v{size}.log"
        pruned = {} if path.exists() else xtc("prune-vocab", args.teacher, "--data", *map(str, args.data),
                                              "--vocab-size", str(size), "--out", str(path), log=log)
        result_file.write_text(json.dumps({"prune": pruned, **measure(str(path), args, log)}, indent=1) + "\n")
    return path, json.loads(result_file.read_text())


def run_row(name: str, extra: list[str], args, out: Path) -> dict:
    row_dir = out / name
    result_file = out / f"{name}.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    log = out / f"{name}.log"
    teacher, cache = args.teacher, args.cache_dir or out / "cache"
    if name in VOCAB:  # its own teacher, so its own cache: the token windows differ
        teacher, cache = str(pruned_teacher(VOCAB[name], args, out)[0]), Path(f"{cache}-v{VOCAB[name]}")
    compress = ["compress", "--teacher", teacher, "--data", *map(str, args.data), "--out", str(row_dir),
                "--time-budget", str(args.minutes), "--cache-dir", str(cache),
                "--cache-tokens", str(args.cache_tokens), *COMMON, *extra]
    done = row_dir / "training" / "summary.json"
    if done.exists() and not (row_dir / "checkpoints").exists():  # compressed already (e.g. started by hand)
        summary = json.loads(done.read_text())
        wall_minutes = summary["seconds"] / 60
    else:
        if (row_dir / "checkpoints").exists():
            compress.append("--resume")
        started = time.monotonic()
        summary = xtc(*compress, log=log)
        wall_minutes = (time.monotonic() - started) / 60  # this call's only: a resumed row ran part before
    result = {"name": name, "args": extra, "compress": summary, "budget_minutes": args.minutes,
              "wall_minutes": wall_minutes, **measure(str(row_dir), args, log)}
    result_file.write_text(json.dumps(result, indent=1) + "\n")
    return result


def weights(r: dict) -> str:
    """The table's description of a row's weights (from its `xtc compress` arguments)."""
    args = r["args"]
    fmt = args[args.index("--weight-format") + 1]
    group = f"g{args[args.index('--group-size') + 1]}" if "--group-size" in args else "per row"
    text = f"{fmt}-int4 by sensitivity {group}, A8" if "--target-mb" in args else f"{fmt} {group}, A8"
    if r["name"] in VOCAB:
        text += f"; {VOCAB[r['name']]:,}-token vocab, emb 4-bit g{args[args.index('--embed-group') + 1]}"
    return text


def table(teacher: dict, rows: list[dict], pruned: dict[int, dict] | None = None) -> str:
    t_score = teacher["quality"]["score"]
    t_mb = teacher["speed"]["disk_mb"]
    lines = ["| model | layers | weights | MB | smaller | EM | ES | score | retention | cold ms | warm ms "
             "| budget min | steps per layer / end-to-end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def line(name, layers, weights, q, s, minutes, steps):
        lines.append(f"| {name} | {layers} | {weights} | {s['disk_mb']:.1f} | {t_mb / s['disk_mb']:.1f}x | "
                     f"{q['exact_match']:.1f} | {q['edit_similarity']:.1f} | {q['score']:.1f} | "
                     f"{100 * q['score'] / t_score:.0f}% | {s['latency_ms']:.0f} | {s['warm_latency_ms']:.0f} | "
                     f"{minutes} | {steps} |")

    line("teacher (fp32)", 30, "fp32", teacher["quality"], teacher["speed"], "-", "-")
    for size, t in (pruned or {}).items():
        line(f"teacher, {size:,}-token vocab", 30, "fp32", t["quality"], t["speed"], "-", "-")
    for r in rows:
        c = r["compress"]
        stage = {s["stage"]: s for s in c["stages"]}
        steps = f"{stage['blocks']['steps']} / {stage['e2e']['steps'] if 'e2e' in stage else 0}"
        if not c["finished"]:
            steps += f" (budget ran out: {stage['blocks']['layers_done']} layers trained)"
        line(r["name"], len(c["kept_layers"]), weights(r), r["quality"], r["speed"],
             f"{r.get('budget_minutes', r['wall_minutes']):.0f}", steps)
    return "\n".join(lines) + "\n"


def curves(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        out = Path(r["compress"]["out"])
        blocks = json.loads((out / "training" / "blocks.json").read_text()) if (out / "training" / "blocks.json").exists() else []
        if blocks:
            axes[0].plot([b["final_loss"] for b in blocks], label=r["name"], linewidth=1)
        log = out / "training" / "log.e2e.jsonl"
        if log.exists():
            rows_e2e = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            axes[1].plot([x["step"] for x in rows_e2e], [x["loss"] for x in rows_e2e], label=r["name"], linewidth=1)
    axes[0].set(xlabel="student layer", ylabel="block loss after training", yscale="log", title="block-wise stage")
    axes[1].set(xlabel="step", ylabel="top-k KD loss", title="end-to-end stage")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="smollm2")
    p.add_argument("--data", nargs="+", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=30.0, help="time budget of each row's compression")
    p.add_argument("--limit", type=int, default=200, help="benchmark items evaluated")
    p.add_argument("--benchmark", type=Path, default=BENCHMARK)
    p.add_argument("--cache-tokens", type=int, default=131072)
    p.add_argument("--cache-dir", type=Path, help="a teacher cache to share (default: OUT/cache)")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "frontier")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    teacher_file = args.out / "teacher.json"
    if not teacher_file.exists():
        teacher_file.write_text(json.dumps(measure(args.teacher, args, args.out / "teacher.log"), indent=1) + "\n")
    teacher = json.loads(teacher_file.read_text())
    rows, pruned = [], {}
    for name in args.rows:
        rows.append(run_row(name, ROWS[name], args, args.out))
        if name in VOCAB:
            pruned[VOCAB[name]] = pruned_teacher(VOCAB[name], args, args.out)[1]
        (args.out / "frontier.md").write_text(table(teacher, rows, pruned))
        print(f"{name}: score {rows[-1]['quality']['score']:.1f}", flush=True)
    (args.out / "frontier.json").write_text(json.dumps({"teacher": teacher, "pruned_teachers": pruned, "rows": rows},
                                                       indent=1) + "\n")
    curves(rows, args.out / "curves.png")
    print(table(teacher, rows, pruned))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
