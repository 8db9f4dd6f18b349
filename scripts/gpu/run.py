#!/usr/bin/env python3
"""The GPU run as a plan of `xtc` calls: the SmolLM2-135M teacher, a frontier of block-wise
compressed students, every model evaluated on the same benchmark items, one report.

    receive   copy the teacher parts this call carries (.stage/teacher.part-*) to WORK/stage
    teacher   join the parts, check the sha256, `xtc install teacher.gguf --name teacher`
              (converted once to safetensors in WORK/home); start the teacher's evaluation
    compress  for each row of GPU_ROWS not finished yet (its flags: ROWS in benchmarks/frontier_rows.py,
              the table benchmarks/frontier.py uses too): `xtc compress --recipe blockwise --steps auto
              --time-budget M ...` (one teacher cache shared by all rows; a row cut short by the
              call's end continues with --resume in the next call); its evaluation starts at once
    eval      wait for the evaluations: `xtc eval --shard K/N --predictions FILE` workers, niced,
              on the CPU cores that training leaves free (resumable: a cut call loses one item each)
    report    `xtc eval --merge` per model -> OUT/metrics.json, OUT/results.md, OUT/logs.tar.gz
              (logs, predictions, each row's OUT/training: loss curves and losses), the --ship
              models as <16 MB parts

docs/GPU-RUN.md has the device calls. WORK (default /tmp/xtc-run) keeps the state between the calls
of one warm hold. A CPU dry run of the same plan (tests/test_gpu_script.py runs one):

    run.py --stage all --dry-run --teacher TINY_HF_DIR --data DIR --out-dir /tmp/xtc-dry
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks.frontier_rows import BENCHMARK, GPU_ROWS, RECIPE, ROWS, xtc_cmd, xtc_run  # noqa: E402

SHA_FILE = REPO / "scripts" / "gpu" / "teacher.sha256"
STAGES = ["receive", "teacher", "compress", "eval", "report"]
PART_BYTES = 16_000_000  # < 16 MiB: the largest file that comes back from $OUT
MAX_OUT_FILES, MAX_OUT_BYTES = 8, 60 * 2**20  # of 8 files and 64 MiB, with room to spare

# What is the GPU run's own: the sizes that fit the lent GPU's limits (the device run), and the CPU dry run on
# a tiny teacher; every value has its flag.
PROFILES = {
    "gpu": dict(device="cuda", seq_len=512, batch_size=16, cache_tokens=262_144, steps="auto", limit=200, shards=6,
                eval_workers=3, eval_threads=4, minutes=9.3, eval_tail_s=60.0, ship="int2-cut,binary-cut"),
    "dry": dict(device="cpu", seq_len=32, batch_size=2, cache_tokens=4096, steps="3", limit=4, shards=2,
                eval_workers=2, eval_threads=1, minutes=5.0, eval_tail_s=5.0, ship="int2-cut"),
}
START = time.monotonic()  # reset by main()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {msg}", flush=True)


def child_env(a, threads: int | None = None) -> dict:
    env = {**os.environ, "XTC_HOME": str(a.work / "home"), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    return env


def call(a, args: list, log_name: str) -> subprocess.CompletedProcess:
    """Run `xtc ARGS`, its output appended to WORK/logs/LOG_NAME; stdout is also returned."""
    return xtc_run(*args, log=a.work / "logs" / log_name, env=child_env(a))


def tail(path: Path, n: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def gpu_line() -> str:
    if not shutil.which("nvidia-smi"):
        return ""
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,utilization.gpu,memory.used", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return out.splitlines()[0] if out else ""


def site_dirs() -> list[Path]:
    """The device's installed packages (never the standard library): the distillation corpus."""
    import site
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    return [p for p in dict.fromkeys(Path(d).resolve() for d in site.getsitepackages()) if p.is_dir() and p != stdlib]


# -- teacher ----------------------------------------------------------------------------------------

def join_parts(parts: list[Path], target: Path, expected_sha: str) -> str:
    """Concatenate the parts (sorted by name) into target; returns the sha256; raises on mismatch."""
    h, tmp = hashlib.sha256(), target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for part in sorted(parts):
            data = part.read_bytes()
            h.update(data)
            out.write(data)
    if h.hexdigest() != expected_sha:
        tmp.unlink()
        raise SystemExit(f"teacher: sha256 of {', '.join(p.name for p in sorted(parts))} is {h.hexdigest()}, expected "
                         f"{expected_sha}: a part is missing or damaged (start again from call 1)")
    tmp.replace(target)
    return expected_sha


def stage_receive(a) -> None:
    (a.work / "stage").mkdir(parents=True, exist_ok=True)
    for part in sorted((REPO / ".stage").glob("teacher.part-*")):
        shutil.copyfile(part, a.work / "stage" / part.name)
        log(f"receive: {part.name} ({part.stat().st_size / 2**20:.1f} MiB)")
    log(f"receive: parts on the device: {', '.join(p.name for p in sorted((a.work / 'stage').glob('*'))) or 'none'}")


def stage_teacher(a, evals: "Evals") -> None:
    if a.work.joinpath("teacher.done").exists():
        log("teacher: already installed")
    else:
        src = a.teacher
        if src is None:
            parts = sorted((a.work / "stage").glob("teacher.part-*"))
            if not parts:
                raise SystemExit("teacher: no parts on the device: run the receive stage (call 1) first")
            src = a.work / "teacher.gguf"
            join_parts(parts, src, SHA_FILE.read_text().split()[0])
        proc = call(a, ["install", src, "--name", "teacher"], "install.log")
        if proc.returncode:
            raise SystemExit(f"teacher: xtc install failed:\n{tail(a.work / 'logs' / 'install.log')}")
        a.work.joinpath("teacher.done").write_text(proc.stdout)
        log(f"teacher: {proc.stdout.strip()}")
    evals.add("teacher", "teacher")


# -- compress -------------------------------------------------------------------------------------

def compress_cmd(a, name: str, minutes: float, resume: bool) -> list[str]:
    cmd = xtc_cmd("compress", "--teacher", "teacher", *RECIPE, *ROWS[name], "--data", *a.data,
              "--out", a.work / "models" / name, "--device", a.device, "--steps", a.steps,
              "--time-budget", f"{minutes:.2f}", "--seq-len", a.seq_len, "--batch-size", a.batch_size,
              "--cache-tokens", a.cache_tokens, "--cache-dir", a.work / "cache", "--decontaminate", BENCHMARK, "--json")
    return cmd + ["--resume"] * resume


def summary(a, name: str) -> dict | None:
    return read_json(a.work / "models" / name / "training" / "summary.json")


def stage_compress(a, evals: "Evals", deadline: float) -> None:
    todo = [n for n in a.rows if not (summary(a, n) or {}).get("finished")]
    for name in a.rows:
        if name not in todo:
            log(f"{name}: already done")
            evals.add(name, a.work / "models" / name)
    for i, name in enumerate(todo):
        share = (deadline - a.eval_tail_s - time.monotonic()) / (len(todo) - i)
        if share < a.min_row_s:
            log(f"{name}: {share:.0f} s left for it: skipped (the next call runs it)")
            continue
        out = a.work / "models" / name
        resume = (out / "checkpoints").exists()
        shutil.rmtree(a.work / "eval" / name, ignore_errors=True)  # predictions of an unfinished model
        (out / "training" / "summary.json").unlink(missing_ok=True)  # and its summary
        cmd = compress_cmd(a, name, (share - 15) / 60, resume)
        log(f"{name}: {' '.join(ROWS[name])}, {share:.0f} s{' (resuming)' if resume else ''}")
        logfile = a.work / "logs" / f"compress-{name}.log"
        with open(logfile, "a") as logf:
            logf.write("$ " + " ".join(cmd) + "\n")
            logf.flush()
            proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, cwd=REPO, env=child_env(a))
            t0, beat = time.monotonic(), 0.0
            while proc.poll() is None:
                evals.poll()
                if time.monotonic() - beat > 30:
                    beat = time.monotonic()
                    log(f"{name}: {beat - t0:.0f}/{share:.0f} s | {evals.progress()} | {gpu_line()}")
                if time.monotonic() > t0 + share + 60:  # past its budget: stop it; --resume continues it
                    proc.send_signal(2)
                    try:
                        proc.wait(60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                time.sleep(1)
        s = summary(a, name)
        if proc.returncode or s is None:
            log(f"{name}: xtc compress failed (rc {proc.returncode}):\n{tail(logfile)}")
            continue
        log(f"{name}: {s['packed_mb']:.1f} MB ({s['ratio']}x), kept {len(s['kept_layers'])} layers, val perplexity "
            f"{s.get('val_perplexity')} (teacher {s.get('teacher_val_perplexity')}), {s['seconds']:.0f} s"
            f"{'' if s['finished'] else ', budget hit: the next call continues it'}")
        evals.add(name, out)


# -- evaluations ----------------------------------------------------------------------------------

class Evals:
    """Shard K of N of each model's benchmark items as a niced `xtc eval --predictions` worker."""

    def __init__(self, a):
        self.a, self.queue, self.running = a, [], {}
        self.items = min(a.limit, len(BENCHMARK.read_text(encoding="utf-8").splitlines()))

    def files(self, name: str) -> list[Path]:
        n = self.a.shards
        return [self.a.work / "eval" / name / f"shard-{k}-of-{n}.jsonl" for k in range(1, n + 1)]

    def done(self, name: str) -> int:
        return sum(len(f.read_text().splitlines()) for f in self.files(name) if f.exists())

    def add(self, name: str, model) -> None:
        for k, f in enumerate(self.files(name), start=1):
            finished = f.exists() and len(f.read_text().splitlines()) >= len(range(k - 1, self.items, self.a.shards))
            if not finished and (name, k) not in self.running and (name, k, model) not in self.queue:
                self.queue.append((name, k, model))
        self.poll()

    def poll(self) -> None:
        for key, proc in list(self.running.items()):
            if proc.poll() is not None:
                del self.running[key]
                if proc.returncode:
                    log(f"eval {key[0]} {key[1]}/{self.a.shards} failed:\n{tail(self.log(*key), 6)}")
        while self.queue and len(self.running) < self.a.eval_workers:
            name, k, model = self.queue.pop(0)
            out = self.files(name)[k - 1]
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = xtc_cmd("eval", "--model", model, "--benchmark", BENCHMARK, "--limit", self.a.limit, "--shard",
                      f"{k}/{self.a.shards}", "--predictions", out, "--threads", self.a.eval_threads, "--json")
            with open(self.log(name, k), "a") as logf:
                self.running[(name, k)] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO,
                                                           env=child_env(self.a, self.a.eval_threads),
                                                           preexec_fn=lambda: os.nice(10))

    def log(self, name: str, k: int) -> Path:
        return self.a.work / "logs" / f"eval-{name}-{k}.log"

    def progress(self) -> str:
        names = dict.fromkeys(n for n, *_ in [*self.running, *self.queue])
        return "eval " + (", ".join(f"{n} {self.done(n)}/{self.items}" for n in names) or "idle")

    def wait(self, deadline: float) -> None:
        beat = 0.0
        while (self.running or self.queue) and time.monotonic() < deadline:
            self.poll()
            if time.monotonic() - beat > 30:
                beat = time.monotonic()
                log(self.progress())
            time.sleep(0.5)
        if self.running or self.queue:
            log(f"eval: out of time ({self.progress()}): `--stage eval,report` in the next call finishes it")

    def stop(self) -> None:
        for proc in self.running.values():
            proc.terminate()
        for proc in self.running.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.running.clear()


# -- report ---------------------------------------------------------------------------------------

def metrics(a, evals: Evals) -> dict:
    teacher = next((r for r in json.loads(call(a, ["list", "--json"], "report.log").stdout or "[]")
                    if r["name"] == "teacher"), {})
    config = read_json(Path(teacher.get("path", "-")) / "config.json", {})
    models = {"teacher": {"flags": "fp32", "layers": config.get("num_hidden_layers") or config.get("n_layer"),
                          "size_mb": teacher.get("disk_mb"), "reduction": 1.0}}  # fp32 size: from a row's summary
    for name in a.rows:
        s = summary(a, name)
        if s:
            models[name] = {"flags": " ".join(ROWS[name]), "layers": len(s["kept_layers"]), "size_mb": s["packed_mb"],
                            "reduction": s["ratio"], "finished": s["finished"], "minutes": round(s["seconds"] / 60, 2),
                            "val_perplexity": s.get("val_perplexity"), "summary": s}
            models["teacher"].update(val_perplexity=s.get("teacher_val_perplexity"), size_mb=s["teacher_fp32_mb"])
    for name, m in models.items():
        files = [f for f in evals.files(name) if f.exists()]
        if files:
            proc = call(a, ["eval", "--merge", *files, "--limit", a.limit, "--json"], "report.log")
            m["eval"] = json.loads(proc.stdout) if proc.returncode == 0 else None
    base = (models["teacher"].get("eval") or {}).get("score")
    for m in models.values():
        if base and m.get("eval"):
            m["retention"] = round(m["eval"]["score"] / base, 4)
    return {"benchmark": {"file": str(BENCHMARK.relative_to(REPO)), "limit": a.limit, "shards": a.shards},
            "device": gpu_line() or "cpu", "settings": {k: str(v) for k, v in vars(a).items() if k != "stages"},
            "models": models}


def results_table(m: dict) -> str:
    rows = ["| model | flags | layers | MB | smaller | val ppl | EM | ES | score | retention | n | minutes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x, spec="", unit="": "—" if x is None else format(x, spec) + unit  # noqa: E731
    for name, r in m["models"].items():
        e = r.get("eval") or {}
        rows.append(f"| {name} | {r['flags']} | {f(r.get('layers'))} | {f(r.get('size_mb'), '.1f')} | "
                    f"{f(r.get('reduction'), '.1f', 'x')} | {f(r.get('val_perplexity'), '.2f')} | "
                    f"{f(e.get('exact_match'), '.1f')} | {f(e.get('edit_similarity'), '.1f')} | "
                    f"{f(e.get('score'), '.2f')} | "
                    f"{f(r.get('retention'), '.1%')} | {f(e.get('n'))} | {f(r.get('minutes'), '.1f')}"
                    f"{'' if r.get('finished', True) else ' (cut)'} |")
    corpus = next((r["summary"]["corpus"] for r in m["models"].values() if r.get("summary")), "?")
    return "\n".join([f"# Block-wise compression of SmolLM2-135M ({m['device']})", "",
                      f"Benchmark `{m['benchmark']['file']}`, first {m['benchmark']['limit']} items, CodeXGLUE "
                      f"EM/ES in %, score = (EM + ES) / 2, retention = score / teacher's score. Corpus: {corpus}.", "",
                      *rows, ""])


def split_into(src: Path, out_dir: Path, prefix: str) -> list[Path]:
    parts, data = [], src.read_bytes()
    for i in range(0, max(1, len(data)), PART_BYTES):
        n = i // PART_BYTES
        parts.append(out_dir / f"{prefix}.part-{chr(97 + n // 26)}{chr(97 + n % 26)}")
        parts[-1].write_bytes(data[i:i + PART_BYTES])
    return parts


def stage_report(a, evals: Evals) -> None:
    a.out_dir.mkdir(parents=True, exist_ok=True)
    m = metrics(a, evals)
    (a.out_dir / "results.md").write_text(results_table(m))
    with tarfile.open(a.out_dir / "logs.tar.gz", "w:gz") as tar:
        for d, arc in [(a.work / "logs", "logs"), (a.work / "eval", "eval")]:
            if d.exists():
                tar.add(d, arcname=arc)
        for name in a.rows:
            if (a.work / "models" / name / "training").exists():
                tar.add(a.work / "models" / name / "training", arcname=f"training/{name}")
    used = [a.out_dir / "logs.tar.gz", a.out_dir / "results.md"]
    m["shipped"] = {}
    for name in [n for n in a.ship.split(",") if n and summary(a, n)]:
        archive = a.work / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for f in sorted((a.work / "models" / name).iterdir()):
                if f.is_file():
                    tar.add(f, arcname=f"{name}/{f.name}")
        size, n_parts = archive.stat().st_size, -(-archive.stat().st_size // PART_BYTES)
        if len(used) + 1 + n_parts > MAX_OUT_FILES or sum(p.stat().st_size for p in used) + size > MAX_OUT_BYTES:
            log(f"report: {name} ({size / 1e6:.1f} MB) does not fit what comes back: left out")
            continue
        used += split_into(archive, a.out_dir, archive.name)
        m["shipped"][name] = {"sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                              "join": f"cat {archive.name}.part-* > {archive.name} && tar xzf {archive.name}"}
    (a.out_dir / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    print("\n" + (a.out_dir / "results.md").read_text(), flush=True)


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, help=f"comma-separated, of {','.join(STAGES)}, or all")
    p.add_argument("--rows", default=",".join(GPU_ROWS), help=f"which rows, in this order (of {','.join(GPU_ROWS)})")
    p.add_argument("--out-dir", type=Path, default=os.environ.get("OUT"), help="what comes back (default $OUT)")
    p.add_argument("--work", type=Path, help="state between calls (default /tmp/xtc-run, dry run /tmp/xtc-run-dry)")
    p.add_argument("--dry-run", action="store_true", help="the CPU profile (give --teacher and --data)")
    p.add_argument("--teacher", type=Path, help="a teacher HF directory or .gguf instead of the staged parts")
    p.add_argument("--data", type=Path, nargs="+", help="corpus directories (default: the device's site-packages)")
    p.add_argument("--minutes", type=float, help="wall clock of this call")
    p.add_argument("--min-row-s", type=float, default=45.0, help="a row given less time waits for the next call")
    for key in PROFILES["gpu"]:
        if key != "minutes":
            p.add_argument("--" + key.replace("_", "-"), type=type(PROFILES["gpu"][key]))
    a = p.parse_args(argv)
    for key, value in PROFILES["dry" if a.dry_run else "gpu"].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.stages = STAGES if a.stage == "all" else [s for s in STAGES if s in a.stage.split(",")]
    a.rows = [r for r in a.rows.split(",") if r]
    bad = [s for s in a.stage.split(",") if s not in STAGES + ["all"]] + [r for r in a.rows if r not in GPU_ROWS]
    if bad or a.out_dir is None:
        p.error(f"unknown stage or row: {', '.join(bad)}" if bad else "--out-dir is required where $OUT is not set")
    a.work = (a.work or Path("/tmp/xtc-run-dry" if a.dry_run else "/tmp/xtc-run")).resolve()
    a.out_dir = a.out_dir.resolve()
    a.data = [d.resolve() for d in a.data] if a.data else site_dirs()
    return a


def main(argv: list[str] | None = None) -> int:
    global START
    START, a = time.monotonic(), parse_args(argv)
    deadline = START + a.minutes * 60 - (40 if "report" in a.stages else 10)
    for d in ("logs", "models", "eval"):
        (a.work / d).mkdir(parents=True, exist_ok=True)
    log(f"run.py --stage {','.join(a.stages)} --rows {','.join(a.rows)}: {a.minutes} min, work {a.work}; "
        f"{gpu_line() or 'no GPU'}; corpus {' '.join(map(str, a.data))}")
    evals, status = Evals(a), 0
    try:
        if "receive" in a.stages:
            stage_receive(a)
        if "teacher" in a.stages:
            stage_teacher(a, evals)
        if "compress" in a.stages:
            stage_compress(a, evals, deadline)
        if "eval" in a.stages:
            for name in ["teacher", *a.rows]:
                if name == "teacher" or summary(a, name):
                    evals.add(name, "teacher" if name == "teacher" else a.work / "models" / name)
            evals.wait(deadline)
    except SystemExit as exc:
        log(f"STOPPED: {exc.code}")
        status = 1
    finally:
        evals.stop()
    if "report" in a.stages:
        stage_report(a, evals)
    log(f"done in {time.monotonic() - START:.0f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
