#!/usr/bin/env python3
"""One driver for the GPU run of issue 6: the SmolLM2-135M teacher -> layer-reduced, quantised
(W1A8) and hybrid XTC students, all evaluated with the teacher on the same benchmark items.

Device calls (docs/GPU-RUN.md has the exact commands, carry paths and time estimates):

    run.py --stage receive,corpus                  # call 1, carries .stage/teacher.part-aa and .whl
    run.py --stage receive,prepare,layer,quant     # call 2, carries .stage/teacher.part-ab
    run.py --stage hybrid,eval,report              # call 3
    run.py --stage eval,report --minutes 4         # call 4, only if call 3 left evaluations unfinished

CPU dry run of the same code at tiny scale:

    run.py --stage all --dry-run --teacher-dir DIR --site-dirs D [D ...] --out-dir /tmp/xtc-dry

Stages, in this order when several are given:
  receive  copy the teacher parts carried in this call (.stage/teacher.part-*) to WORK/stage
  corpus   WORK/corpus: symlinks to a seeded sample of the .py files of the installed site-packages
           (never the standard library), minus any file that contains a benchmark item's lines
  prepare  join the parts, check sha256 (scripts/gpu/teacher.sha256), convert the GGUF to a Hugging
           Face directory (WORK/teacher); start the teacher's evaluation; time a few training steps of
           each student (calibration) so that every stage's step count ends its LR schedule in time
  layer    xtc compress --method layer   (15 of 30 layers, fp32; keeps its checkpoint for hybrid)
  quant    xtc compress --method quant   (30 layers, 1-bit weights, 8-bit activations, 4-bit embeddings)
  hybrid   xtc compress --method hybrid --resume, starting from the finished layer stage: its second
           stage (W1A8 on the 15-layer student) is the only one trained here
  eval     wait for the benchmark of every finished model (evaluations also run in the background,
           niced, on the CPU cores that training leaves free, as soon as a model is finished)
  report   sizes, scores, retention, metrics.json, results.md, losses.png, logs.tar.gz and the packed
           hybrid (and quant, if it fits the limits on what comes back) as 16 MB parts

Every call ends with a report of what exists so far (metrics.json, results.md, losses.png,
logs.tar.gz in --out-dir); the packed models are added by the `report` stage. State lives in
--work (default /tmp/xtc-run), which survives between the calls of one warm hold of the device.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STAGES = ["receive", "corpus", "prepare", "layer", "quant", "hybrid", "eval", "report"]
STUDENTS = ["layer", "quant", "hybrid"]
MODELS = ["teacher", "layer", "quant", "hybrid"]
EVAL_ORDER = ["teacher", "hybrid", "layer", "quant"]  # the goals need teacher and hybrid first
BENCHMARK = REPO / "benchmarks" / "data" / "line_completion_stdlib.jsonl"
SHA_FILE = REPO / "scripts" / "gpu" / "teacher.sha256"
PART_BYTES = 16_000_000  # < 16 MiB: the largest file that comes back from $OUT
MAX_OUT_FILES = 8
MAX_OUT_BYTES = 60 * 2**20  # of the 64 MiB allowed, with room to spare
MAX_FILE_BYTES = 1_000_000  # xtc.train.data skips larger files anyway
EVAL_MAX_NEW_TOKENS = 48  # `xtc eval` defaults, so that the CPU check here gives the same scores
EVAL_CONTEXT_TOKENS = 1024

# Two profiles: the H100 run and the tiny CPU dry run. Every value can be overridden by its flag.
PROFILES = {
    "gpu": dict(device="cuda", seq_len=1024, batch_size=16, lr_layer=3e-4, lr_quant=5e-4, max_tokens=24_000_000,
                corpus_mb=160.0, probe_steps=30, probe_tokens=2_000_000, limit=200, shards=4, eval_threads=4,
                eval_procs_training=3, eval_procs_idle=4, minutes=9.3, steps=None, checkpoint_every=None,
                startup_s=20.0, final_s=20.0),
    "dry": dict(device="cpu", seq_len=64, batch_size=4, lr_layer=3e-4, lr_quant=5e-4, max_tokens=40_000,
                corpus_mb=1.5, probe_steps=4, probe_tokens=20_000, limit=10, shards=2, eval_threads=1,
                eval_procs_training=1, eval_procs_idle=2, minutes=10.0, steps=6, checkpoint_every=3,
                startup_s=5.0, final_s=5.0),
}


# -- small helpers ------------------------------------------------------------------------------

class Clock:
    def __init__(self, minutes: float):
        self.start = time.monotonic()
        self.deadline = self.start + minutes * 60

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Paths:
    work: Path
    out: Path

    def __post_init__(self):
        self.stage = self.work / "stage"
        self.gguf = self.work / "teacher.gguf"
        self.teacher = self.work / "teacher"
        self.corpus = self.work / "corpus"
        self.corpus_info = self.work / "corpus.json"
        self.calib = self.work / "calib.json"
        self.env = self.work / "env.json"
        self.models = self.work / "models"
        self.evals = self.work / "eval"
        self.logs = self.work / "logs"

    def model_dir(self, name: str) -> Path:
        return self.teacher if name == "teacher" else self.models / name

    def done_marker(self, name: str) -> Path:
        return self.models / f"{name}.done.json"

    def plan_file(self, name: str) -> Path:
        return self.models / f"{name}.plan.json"


CLOCK: Clock | None = None
LOG_FILE: Path | None = None


def log(msg: str) -> None:
    stamp = f"[{CLOCK.elapsed():6.1f}s]" if CLOCK else "[  ----]"
    line = f"{stamp} {msg}"
    print(line, flush=True)
    if LOG_FILE is not None:
        with open(LOG_FILE, "a") as f:
            f.write(time.strftime("%H:%M:%S ") + line + "\n")


def read_json(path: Path, default=None):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def weight_mb(directory: Path) -> float:
    """Megabytes of weight files, the rule `xtc list` uses (xtc.core.format.weight_files_mb), without torch."""
    d = Path(directory)
    if not d.is_dir():
        return 0.0
    return sum(p.stat().st_size for p in d.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")) / 1e6


def child_env(threads: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
            env[var] = str(threads)
        env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_quiet(cmd: list[str], log_path: Path, timeout: float | None = None, threads: int | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        try:
            return subprocess.run(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                  env=child_env(threads), timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            f.write("timed out\n")
            return 124


def tail(path: Path, n: int = 8) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def gpu_status() -> str:
    if not shutil.which("nvidia-smi"):
        return ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
        util, mem = (x.strip() for x in out[0].split(","))
        return f"gpu {util}% {int(mem) / 1024:.1f} GiB"
    except Exception:
        return ""


# -- benchmark items, shards, decontamination ------------------------------------------------------

def load_items(path: Path) -> list[dict]:
    from xtc.eval.quality import load_benchmark

    return load_benchmark(path)


def shard_indices(limit: int, shard: int, shards: int) -> list[int]:
    """Interleaved shards, so that partially finished shards still cover the first items evenly."""
    return list(range(shard, limit, shards))


def _norm_line(line: str) -> str:
    return " ".join(line.split())


def item_keys(items: list[dict], window: int = 3) -> set[str]:
    """For each benchmark item: its cut line (the input's last line + gt) with the non-empty lines
    just before it. A training file holding these lines verbatim holds the item."""
    keys = set()
    for item in items:
        before = item["input"].split("\n")
        cut_line = _norm_line(before[-1] + item["gt"])
        previous = [_norm_line(x) for x in before[:-1] if x.strip()][-(window - 1):]
        lines = previous + [cut_line]
        if len(lines) == window:
            keys.add("\n".join(lines))
    return keys


def file_has_key(text: str, keys: set[str], window: int = 3) -> bool:
    lines = [_norm_line(x) for x in text.split("\n") if x.strip()]
    return any("\n".join(lines[i:i + window]) in keys for i in range(len(lines) - window + 1))


def _contaminated(args) -> bool:
    path, keys = args
    try:
        return file_has_key(Path(path).read_text(encoding="utf-8", errors="replace"), keys)
    except OSError:
        return True  # unreadable: leave it out


_KEYS: set[str] = set()


def _init_keys(keys):
    global _KEYS
    _KEYS = keys


def _contaminated_global(path: str) -> bool:
    return _contaminated((path, _KEYS))


# -- stage: receive -------------------------------------------------------------------------------

def stage_receive(a, P: Paths) -> None:
    P.stage.mkdir(parents=True, exist_ok=True)
    parts = [] if a.teacher_dir else sorted((REPO / ".stage").glob("teacher.part-*"))
    for part in parts:
        target = P.stage / part.name
        if not (target.exists() and target.stat().st_size == part.stat().st_size):
            shutil.copyfile(part, target)
        log(f"receive: {part.name} ({part.stat().st_size / 2**20:.1f} MiB) -> {target}")
    if not parts:
        log("receive: no .stage/teacher.part-* carried in this call")
    have = sorted(p.name for p in P.stage.glob("teacher.part-*"))
    log(f"receive: parts on the device now: {', '.join(have) or 'none'}")
    if not P.env.exists():
        record_env(P)


def record_env(P: Paths) -> None:
    code = ("import json, os, sys, platform\n"
            "r = {'python': sys.version.split()[0], 'cpus': os.cpu_count(), 'machine': platform.machine()}\n"
            "try:\n import torch; r.update(torch=torch.__version__, cuda=torch.cuda.is_available(),\n"
            "   gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)\n"
            "except Exception as e: r['torch_error'] = repr(e)\n"
            "from importlib.metadata import version\n"
            "for m in ('transformers', 'accelerate', 'gguf', 'rapidfuzz', 'tokenizers', 'safetensors', 'matplotlib'):\n"
            " try: __import__(m); r[m] = version(m)\n"
            " except Exception as e: r[m] = 'MISSING: ' + repr(e)\n"
            "print(json.dumps(r))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), cwd=REPO)
    try:
        env = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        env = {"error": out.stderr[-500:]}
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        env["cpu_model"] = cpu
    except (OSError, StopIteration):
        pass
    write_json(P.env, env)
    log("env: " + json.dumps(env))
    missing = [k for k, v in env.items() if isinstance(v, str) and v.startswith("MISSING")]
    if missing:
        log(f"env: WARNING missing {', '.join(missing)} (install the carried .whl first)")


# -- stage: corpus ----------------------------------------------------------------------------------

def default_site_dirs() -> list[Path]:
    import site
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    dirs = []
    for d in site.getsitepackages():
        p = Path(d).resolve()
        if p.is_dir() and p not in dirs:
            dirs.append(p)
    # the stdlib itself never; a site-packages inside it (a system python's lib/pythonX/site-packages) is fine
    return [d for d in dirs if d != stdlib]


def in_stdlib(real: Path, stdlib: Path) -> bool:
    """A file of the standard library itself (a site-packages folder inside it does not count)."""
    if not real.is_relative_to(stdlib):
        return False
    return not any(part in ("site-packages", "dist-packages") for part in real.relative_to(stdlib).parts)


def candidate_files(site_dirs: list[Path]) -> list[tuple[int, Path, Path, int]]:
    """(site dir index, site dir, file, bytes) for every .py file under the site dirs; files of the
    standard library and of the carried wheels (/tmp/site) are left out."""
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    skip_roots = {Path("/tmp/site").resolve()}
    found = []
    for index, root in enumerate(site_dirs):
        root = Path(root).resolve()
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                                 and (here / d).resolve() not in skip_roots)
            if here.resolve() in skip_roots:
                continue
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                path = here / name
                try:
                    real = path.resolve()
                    size = path.stat().st_size
                except OSError:
                    continue
                if 0 < size <= MAX_FILE_BYTES and not in_stdlib(real, stdlib) and not any(
                        real.is_relative_to(r) for r in skip_roots):
                    found.append((index, root, path, size))
    return found


def stage_corpus(a, P: Paths) -> None:
    if P.corpus_info.exists() and P.corpus.is_dir():
        log(f"corpus: already built ({read_json(P.corpus_info, {}).get('summary')})")
        return
    t0 = time.monotonic()
    site_dirs = [Path(d) for d in a.site_dirs] if a.site_dirs else default_site_dirs()
    files = candidate_files(site_dirs)
    total = sum(f[3] for f in files)
    log(f"corpus: {len(files):,} .py files, {total / 1e6:.1f} MB under {', '.join(map(str, site_dirs))}")
    if not files:
        raise SystemExit("corpus: no Python files found")
    rng = random.Random(a.seed)
    order = list(range(len(files)))
    rng.shuffle(order)
    chosen, budget, used = [], a.corpus_mb * 1e6, 0
    for i in order:
        chosen.append(files[i])
        used += files[i][3]
        if used >= budget:
            break
    keys = item_keys(load_items(BENCHMARK))
    paths = [str(f[2]) for f in chosen]
    procs = max(1, min(16, os.cpu_count() or 1, a.corpus_procs))
    if procs > 1:
        from multiprocessing import Pool

        with Pool(procs, initializer=_init_keys, initargs=(keys,)) as pool:
            flags = pool.map(_contaminated_global, paths, chunksize=64)
    else:
        flags = [_contaminated((p, keys)) for p in paths]
    dropped = [p for p, bad in zip(paths, flags) if bad]
    if P.corpus.exists():
        shutil.rmtree(P.corpus)
    kept_bytes, kept, per_package = 0, 0, {}
    for (index, root, path, size), bad in zip(chosen, flags):
        if bad:
            continue
        rel = path.relative_to(root)
        link = P.corpus / f"site{index}" / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path.resolve())
        kept += 1
        kept_bytes += size
        top = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        per_package[top] = per_package.get(top, 0) + size
    top_packages = sorted(per_package.items(), key=lambda kv: -kv[1])[:15]
    info = {
        "site_dirs": [str(d) for d in site_dirs], "candidate_files": len(files), "candidate_mb": round(total / 1e6, 1),
        "sampled_files": len(chosen), "kept_files": kept, "kept_mb": round(kept_bytes / 1e6, 1),
        "dropped_benchmark_overlap": len(dropped), "dropped_examples": dropped[:20], "seed": a.seed,
        "top_packages_mb": {k: round(v / 1e6, 2) for k, v in top_packages},
        "summary": f"{kept:,} files, {kept_bytes / 1e6:.1f} MB sampled from {len(files):,} site-packages files "
                   f"({total / 1e6:.0f} MB); {len(dropped)} dropped for overlap with the benchmark",
        "seconds": round(time.monotonic() - t0, 1),
    }
    write_json(P.corpus_info, info)
    log(f"corpus: {info['summary']} ({info['seconds']} s)")
    log("corpus: largest packages (MB): " + ", ".join(f"{k} {v}" for k, v in info["top_packages_mb"].items()))


# -- stage: prepare ---------------------------------------------------------------------------------

def join_parts(parts: list[Path], target: Path, expected_sha: str) -> str:
    """Concatenate the parts (sorted by name) into target; returns the sha256; raises on mismatch."""
    h = hashlib.sha256()
    tmp = target.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for part in sorted(parts):
            with open(part, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
                    out.write(chunk)
    digest = h.hexdigest()
    if digest != expected_sha:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"prepare: sha256 of {', '.join(p.name for p in sorted(parts))} is {digest}, expected "
                         f"{expected_sha}: a part is missing or damaged (start again from call 1)")
    tmp.replace(target)
    return digest


def stage_prepare(a, P: Paths, pool: "EvalPool") -> None:
    if a.teacher_dir:
        if not P.teacher.exists():
            P.teacher.parent.mkdir(parents=True, exist_ok=True)
            P.teacher.symlink_to(Path(a.teacher_dir).resolve())
        log(f"prepare: teacher from --teacher-dir {a.teacher_dir} (no GGUF)")
    elif (P.teacher / "config.json").exists():
        log("prepare: teacher already converted")
    else:
        expected = SHA_FILE.read_text().split()[0]
        if not (P.gguf.exists() and P.gguf.stat().st_size > 0):
            parts = sorted(P.stage.glob("teacher.part-*"))
            if not parts:
                raise SystemExit("prepare: no teacher parts on the device: run call 1 (receive) first")
            join_parts(parts, P.gguf, expected)
            log(f"prepare: joined {len(parts)} parts, sha256 ok ({P.gguf.stat().st_size / 2**20:.1f} MiB)")
        t = time.monotonic()
        rc = run_quiet([sys.executable, __file__, "_convert", P.gguf, P.teacher], P.logs / "convert.log")
        if rc != 0 or not (P.teacher / "config.json").exists():
            raise SystemExit(f"prepare: GGUF conversion failed (rc {rc}):\n{tail(P.logs / 'convert.log', 15)}")
        log(f"prepare: GGUF -> {P.teacher} ({weight_mb(P.teacher):.1f} MB fp32, {time.monotonic() - t:.0f} s)")
    pool.mark_ready("teacher")
    pool.top_up(a.eval_procs_training)
    if P.calib.exists():
        log("prepare: calibration already done")
        return
    if not P.corpus_info.exists():
        raise SystemExit("prepare: no corpus: run the corpus stage first")
    t = time.monotonic()
    cmd = [sys.executable, __file__, "_calibrate", "--teacher", P.teacher, "--data", P.corpus, "--out", P.calib,
           "--device", a.device, "--seq-len", a.seq_len, "--batch-size", a.batch_size, "--steps", a.probe_steps,
           "--tokens", a.probe_tokens, "--embed-bits", a.embed_bits, "--keep-layers", a.keep_layers]
    proc = subprocess.Popen(list(map(str, cmd)), stdout=open(P.logs / "calibrate.log", "a"), stderr=subprocess.STDOUT,
                            cwd=REPO, env=child_env())
    while proc.poll() is None:
        pool.poll()
        pool.top_up(a.eval_procs_training)
        time.sleep(1.0)
    if proc.returncode != 0 or not P.calib.exists():
        raise SystemExit(f"prepare: calibration failed:\n{tail(P.logs / 'calibrate.log', 15)}")
    c = read_json(P.calib)
    log(f"prepare: calibration ({time.monotonic() - t:.0f} s): tokenizer {c['tokens_per_s']:,.0f} tokens/s; " + "; ".join(
        f"{n} {s['s_per_step'] * 1000:.0f} ms/step at batch {s['batch_size']} (peak {s.get('peak_gib', 0):.1f} GiB)"
        for n, s in c["students"].items()))


# -- stages: layer, quant, hybrid ------------------------------------------------------------------

def planned_steps(budget_s: float, s_per_step: float, tokens: int, tokens_per_s: float, startup_s: float,
                  final_s: float) -> tuple[int, float]:
    """Steps that fit `budget_s` after loading, tokenising and packing (with a 10% margin), and the
    estimated overhead. The time budget passed to compress still stops it if this is off."""
    overhead = startup_s + 1.1 * tokens / max(tokens_per_s, 1.0) + final_s
    steps = int(max(0.0, budget_s - overhead) * 0.9 / max(s_per_step, 1e-6))
    return max(10, steps), overhead


def stage_student(name: str, a, P: Paths, clock: Clock, pool: "EvalPool", budget_s: float) -> None:
    out = P.model_dir(name)
    if P.done_marker(name).exists():
        log(f"{name}: already done ({read_json(P.done_marker(name), {}).get('line', '')})")
        pool.mark_ready(name)
        return
    if not (P.teacher / "config.json").exists() or not P.calib.exists():
        raise SystemExit(f"{name}: the prepare stage has not run")
    calib = read_json(P.calib)
    student = calib["students"][name]
    resume = (out / "checkpoints").exists()
    plan = read_json(P.plan_file(name)) if resume else None
    if name == "hybrid" and not resume:
        if not P.done_marker("layer").exists():
            raise SystemExit("hybrid: the layer stage has not finished (run it first)")
        handoff_layer(P)
        resume = True
    elif out.exists() and not resume:
        shutil.rmtree(out)  # a model from an unfinished call that never got its marker: start over
    if plan is None:
        if a.steps:
            steps, overhead = a.steps, 0.0
        else:
            steps, overhead = planned_steps(budget_s, student["s_per_step"], a.max_tokens, calib["tokens_per_s"],
                                            a.startup_s + calib.get("load_s", 0.0), a.final_s)
        plan = {"steps": steps, "batch_size": student["batch_size"], "budget_s": round(budget_s, 1),
                "estimated_overhead_s": round(overhead, 1), "s_per_step": student["s_per_step"],
                "lr": a.lr_layer if name == "layer" else a.lr_quant}
        write_json(P.plan_file(name), plan)
    steps = plan["steps"]
    eval_every = max(5, steps // 8) if not a.steps else max(1, steps // 2)
    ckpt_every = a.checkpoint_every or max(100, steps // 3)
    method = name
    cmd = [sys.executable, "-m", "xtc", "compress", "--teacher", P.teacher, "--method", method, "--data", P.corpus,
           "--out", out, "--device", a.device, "--steps", steps, "--time-budget", f"{max(0.2, (budget_s - 10) / 60):.3f}",
           "--seq-len", a.seq_len, "--batch-size", plan["batch_size"], "--lr", plan["lr"], "--keep-layers", a.keep_layers,
           "--weight-bits", 1, "--act-bits", 8, "--embed-bits", a.embed_bits, "--max-tokens", a.max_tokens,
           "--eval-every", eval_every, "--checkpoint-every", ckpt_every, "--seed", a.seed, "--json"]
    if resume:
        cmd.append("--resume")
    if name == "layer":
        cmd.append("--keep-checkpoints")  # hybrid starts from this checkpoint
    log(f"{name}: {steps} steps x {plan['batch_size']} x {a.seq_len} tokens, lr {plan['lr']}, budget {budget_s:.0f} s"
        f"{' (resuming)' if resume else ''}")
    out_log = P.logs / f"compress-{name}.log"
    with open(out_log, "a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
    stdout_path = P.logs / f"compress-{name}.stdout"
    t0 = time.monotonic()
    proc = subprocess.Popen(list(map(str, cmd)), stdout=open(stdout_path, "w"), stderr=open(out_log, "a"), cwd=REPO,
                            env=child_env())
    hard_limit = t0 + budget_s + 60
    last_beat = 0.0
    while proc.poll() is None:
        pool.poll()
        pool.top_up(a.eval_procs_training)
        now = time.monotonic()
        if now - last_beat >= a.heartbeat_s:
            last_beat = now
            log(f"{name}: {now - t0:.0f}/{budget_s:.0f} s | {pool.progress()} | {gpu_status()}")
        if now > hard_limit:
            log(f"{name}: past its budget by 60 s: interrupting (a later call continues with --resume)")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(1.0)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        log(f"{name}: compress failed (rc {proc.returncode}) after {seconds:.0f} s:\n{tail(out_log, 15)}")
        return
    try:
        summary = json.loads(stdout_path.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError):
        log(f"{name}: compress printed no summary:\n{tail(stdout_path)}\n{tail(out_log)}")
        return
    summary["wall_s"] = round(seconds, 1)
    summary["plan"] = plan
    last = summary["stages"][-1]
    line = (f"{summary['packed_mb']:.1f} MB ({summary['ratio']}x), {last['steps']} steps"
            f"{'' if last['finished'] else ' (time budget hit)'}, train loss {last['final_train_loss']}, "
            f"val LM {last.get('val_lm_loss')}, {seconds:.0f} s")
    summary["line"] = line
    write_json(P.done_marker(name), summary)
    shutil.rmtree(P.evals / name, ignore_errors=True)  # predictions of an older model of this name
    pool.mark_ready(name)
    log(f"{name}: done: {line}")


def handoff_layer(P: Paths) -> None:
    """Hybrid's first stage IS the layer run: copy its final checkpoint (marked done) and its log,
    so that `compress --method hybrid --resume` goes straight to the quantisation stage."""
    src = P.model_dir("layer") / "checkpoints" / "layer.pt"
    out = P.model_dir("hybrid")
    if not src.exists():
        raise SystemExit(f"hybrid: no layer checkpoint at {src}")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "training").mkdir(parents=True, exist_ok=True)
    rc = run_quiet([sys.executable, __file__, "_handoff", src, out / "checkpoints" / "layer.pt"], P.logs / "handoff.log")
    if rc != 0:
        raise SystemExit(f"hybrid: checkpoint handoff failed:\n{tail(P.logs / 'handoff.log')}")
    layer_log = P.model_dir("layer") / "training" / "log.layer.jsonl"
    if layer_log.exists():
        shutil.copy2(layer_log, out / "training" / "log.layer.jsonl")
    log("hybrid: starts from the finished layer student (checkpoint handed over)")


# -- evaluation pool --------------------------------------------------------------------------------

class EvalPool:
    """CPU evaluations of finished models: (model, shard) tasks run as niced worker processes that
    append one JSON line per benchmark item, so a cut call loses at most the items in flight."""

    def __init__(self, a, P: Paths):
        self.a, self.P = a, P
        self.ready: list[str] = []
        self.running: dict[tuple[str, int], subprocess.Popen] = {}
        self.failures: dict[tuple[str, int], int] = {}
        for name in MODELS:
            if (name == "teacher" and (P.teacher / "config.json").exists()) or P.done_marker(name).exists():
                self.ready.append(name)

    def mark_ready(self, name: str) -> None:
        if name not in self.ready:
            self.ready.append(name)

    def shard_file(self, name: str, shard: int) -> Path:
        return self.P.evals / name / f"shard-{shard}-of-{self.a.shards}.jsonl"

    def done_count(self, name: str, shard: int) -> int:
        f = self.shard_file(name, shard)
        if not f.exists():
            return 0
        wanted = set(shard_indices(self.a.limit, shard, self.a.shards))
        done = set()
        for line in f.read_text().splitlines():
            try:
                done.add(json.loads(line)["i"])
            except (ValueError, KeyError):
                pass
        return len(done & wanted)

    def pending(self) -> list[tuple[str, int]]:
        tasks = []
        for name in EVAL_ORDER:
            if name not in self.ready:
                continue
            for shard in range(self.a.shards):
                key = (name, shard)
                if key in self.running or self.failures.get(key, 0) >= 2:
                    continue
                if self.done_count(name, shard) < len(shard_indices(self.a.limit, shard, self.a.shards)):
                    tasks.append(key)
        return tasks

    def top_up(self, slots: int) -> None:
        rank = {name: i for i, name in enumerate(EVAL_ORDER)}
        for key in self.pending():
            if len(self.running) >= slots:
                # a worse-ranked model's worker gives its slot up (it resumes later, losing one item)
                victims = [k for k in self.running if rank[k[0]] > rank[key[0]]]
                if not victims:
                    break
                victim = max(victims, key=lambda k: rank[k[0]])
                proc = self.running.pop(victim)
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            name, shard = key
            out = self.shard_file(name, shard)
            out.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "_eval-worker", "--model", self.P.model_dir(name), "--limit", self.a.limit,
                   "--shard", shard, "--shards", self.a.shards, "--threads", self.a.eval_threads, "--out", out,
                   "--benchmark", BENCHMARK]
            logf = open(self.P.logs / f"eval-{name}-{shard}.log", "a")
            self.running[key] = subprocess.Popen(list(map(str, cmd)), stdout=logf, stderr=subprocess.STDOUT, cwd=REPO,
                                                 env=child_env(self.a.eval_threads),
                                                 preexec_fn=lambda: os.nice(10))

    def poll(self) -> None:
        for key, proc in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[key]
            if proc.returncode != 0:
                self.failures[key] = self.failures.get(key, 0) + 1
                log(f"eval {key[0]} shard {key[1]}: worker failed (rc {proc.returncode}):\n"
                    f"{tail(self.P.logs / f'eval-{key[0]}-{key[1]}.log', 6)}")

    def busy(self) -> bool:
        return bool(self.running) or bool(self.pending())

    def progress(self) -> str:
        parts = []
        for name in EVAL_ORDER:
            if name in self.ready:
                done = sum(self.done_count(name, s) for s in range(self.a.shards))
                parts.append(f"{name} {done}/{self.a.limit}")
        return "eval " + (", ".join(parts) if parts else "-")

    def stop(self) -> None:
        for proc in self.running.values():
            proc.terminate()
        for proc in self.running.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.running.clear()


def stage_eval(a, P: Paths, clock: Clock, pool: EvalPool, reserve_s: float) -> None:
    log(f"eval: {pool.progress()}")
    last_beat = 0.0
    while clock.left() > reserve_s:
        pool.poll()
        pool.top_up(a.eval_procs_idle)
        if not pool.busy():
            break
        if time.monotonic() - last_beat >= a.heartbeat_s:
            last_beat = time.monotonic()
            log(f"eval: {pool.progress()} ({len(pool.running)} workers)")
        time.sleep(1.0)
    if pool.busy():
        log(f"eval: out of time with work left ({pool.progress()}): `--stage eval,report` in another call finishes it")
    else:
        log(f"eval: complete ({pool.progress()})")


def read_predictions(P: Paths, name: str, limit: int) -> dict[int, dict]:
    preds = {}
    for f in sorted((P.evals / name).glob("shard-*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row["i"] < limit:
                preds[row["i"]] = row
    return preds


# -- stage: report ----------------------------------------------------------------------------------

def row_label(name: str, metrics: dict) -> str:
    models = metrics["models"]
    full, half = models["teacher"].get("layers") or "?", models["layer"].get("layers") or models["hybrid"].get("layers")
    half = half or "half the"
    q = models["quant"] if models["quant"].get("ready") else models["hybrid"]
    wa = f"W{q.get('weight_bits') or 1}A{q.get('act_bits') or 8}"
    emb = f"{q.get('embed_bits') or metrics['settings']['embed_bits']}-bit embeddings"
    return {"teacher": f"baseline: {'tiny test teacher' if metrics['settings']['dry_run'] else 'SmolLM2-135M teacher'} (fp32)",
            "layer": f"layer-reduced ({half} of {full} layers, fp32)",
            "quant": f"quantised ({wa}, {emb})",
            "hybrid": f"hybrid ({half} layers + {wa}, {emb})"}[name]


def _tokens(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def collect_metrics(a, P: Paths) -> dict:
    from xtc.eval.quality import score_predictions

    items = load_items(BENCHMARK)
    preds = {name: read_predictions(P, name, a.limit) for name in MODELS}
    have = [n for n in MODELS if preds[n]]
    common = sorted(set.intersection(*(set(preds[n]) for n in have))) if have else []
    summaries = {n: read_json(P.done_marker(n)) for n in STUDENTS}
    teacher_fp32 = next((s["teacher_fp32_mb"] for s in summaries.values() if s), None) or weight_mb(P.teacher)
    models = {}
    for name in MODELS:
        directory = P.model_dir(name)
        s = summaries.get(name)
        ready = (directory / "config.json").exists() and (name == "teacher" or s is not None)
        m = {"ready": ready, "dir": str(directory)}
        if ready:
            mb = weight_mb(directory) if name != "teacher" else teacher_fp32
            m.update(size_mb=round(mb, 3), reduction=round(teacher_fp32 / mb, 2) if mb else None)
            cfg = read_json(directory / "config.json", {})
            m["layers"] = cfg.get("num_hidden_layers") or cfg.get("n_layer")
            x = cfg.get("xtc", {})
            m.update(weight_bits=x.get("weight_bits"), act_bits=x.get("act_bits"), embed_bits=x.get("embed_bits"))
        if common and preds[name]:
            sel = [preds[name][i] for i in common]
            r = score_predictions([row["pred"] for row in sel], [items[i]["gt"] for i in common])
            r["seconds_per_item"] = round(sum(row.get("s", 0.0) for row in sel) / len(sel), 3)
            m["eval"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
        m["eval_items_done"] = len(preds[name])
        if s:
            m["train"] = {"stages": s["stages"], "wall_s": s.get("wall_s"), "plan": s.get("plan"),
                          "kept_layers": s.get("kept_layers"), "corpus": s.get("corpus")}
            if name == "hybrid" and summaries.get("layer"):
                m["train"]["layer_stage_from"] = "layer run (same student, checkpoint handed over)"
        models[name] = m
    base = models["teacher"].get("eval", {}).get("score")
    for name in MODELS:
        score = models[name].get("eval", {}).get("score")
        if base and score is not None:
            models[name]["retention"] = round(score / base, 4)
    hybrid = models["hybrid"]
    goals = {
        "hybrid_at_least_20x_smaller": (hybrid.get("reduction") or 0) >= 20 if hybrid.get("ready") else None,
        "hybrid_at_least_90pct_score": (hybrid.get("retention") or 0) >= 0.9 if "retention" in hybrid else None,
    }
    return {
        "benchmark": {"file": str(BENCHMARK.relative_to(REPO)), "limit": a.limit, "n_common": len(common),
                      "max_new_tokens": EVAL_MAX_NEW_TOKENS, "context_tokens": EVAL_CONTEXT_TOKENS,
                      "runtime": "xtc CPU runtime (xtc.infer.runtime + xtc.infer.complete), "
                                 f"{a.eval_threads} threads per worker"},
        "teacher_fp32_mb": round(teacher_fp32, 3), "models": models, "goals": goals,
        "corpus": read_json(P.corpus_info, {}), "calibration": read_json(P.calib, {}), "env": read_json(P.env, {}),
        "settings": {k: getattr(a, k) for k in ("device", "seq_len", "batch_size", "lr_layer", "lr_quant", "max_tokens",
                                               "embed_bits", "keep_layers", "seed", "limit", "dry_run")},
    }


def _fmt(x, spec: str, suffix: str = "") -> str:
    return "—" if x is None else format(x, spec) + suffix


def results_table(metrics: dict) -> str:
    b = metrics["benchmark"]
    lines = [
        f"| model | layers | weights / activations | embeddings | size (MB) | smaller | EM | ES | (EM+ES)/2 | "
        f"retention | distillation |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        m = metrics["models"][name]
        e = m.get("eval", {})
        wa = emb = "—"
        if m.get("ready"):
            wa = "fp32" if not m.get("weight_bits") else f"{m['weight_bits']}-bit / {m.get('act_bits') or 32}-bit"
            emb = "fp32" if not m.get("embed_bits") else f"{m['embed_bits']}-bit"
        train = "—"
        if m.get("train"):
            stages = m["train"]["stages"]
            steps = " + ".join(f"{s['steps']}" for s in stages)
            secs = sum(s["seconds"] for s in stages)
            if name == "hybrid":
                layer = metrics["models"]["layer"].get("train")
                if layer:
                    secs += sum(s["seconds"] for s in layer["stages"])
            tokens = sum(s["steps"] for s in stages) * metrics["settings"]["seq_len"] * (
                (m["train"].get("plan") or {}).get("batch_size") or metrics["settings"]["batch_size"])
            train = f"{steps} steps, {_tokens(tokens)} tokens, {secs / 60:.1f} min"
        lines.append(
            f"| {row_label(name, metrics)} | {_fmt(m.get('layers'), 'd')} | {wa} | {emb} | {_fmt(m.get('size_mb'), '.1f')} | "
            f"{_fmt(m.get('reduction'), '.1f', 'x')} | {_fmt(e.get('exact_match'), '.1f')} | "
            f"{_fmt(e.get('edit_similarity'), '.1f')} | {_fmt(e.get('score'), '.2f')} | "
            f"{_fmt(m.get('retention') * 100 if m.get('retention') is not None else None, '.1f', '%')} | {train} |")
    g = metrics["goals"]
    env = metrics.get("env", {})
    corpus = metrics.get("corpus", {})
    out = ["# XTC on SmolLM2-135M: results", "",
           f"Benchmark: `{b['file']}`, first {b['limit']} items, n = {b['n_common']} scored for every model "
           f"(same items), CodeXGLUE EM / ES in %, {b['runtime']}. "
           f"Device: {env.get('gpu') or env.get('cpu_model') or '?'}; torch {env.get('torch', '?')}, "
           f"transformers {env.get('transformers', '?')}.", "",
           *lines, "",
           f"- hybrid >= 20x smaller than the fp32 teacher ({metrics['teacher_fp32_mb']:.1f} MB): "
           f"{'yes' if g['hybrid_at_least_20x_smaller'] else 'no' if g['hybrid_at_least_20x_smaller'] is False else 'n/a'}",
           f"- hybrid >= 90% of the teacher's (EM+ES)/2: "
           f"{'yes' if g['hybrid_at_least_90pct_score'] else 'no' if g['hybrid_at_least_90pct_score'] is False else 'n/a'}",
           f"- distillation corpus: {corpus.get('summary', '?')}; site dirs {', '.join(corpus.get('site_dirs', []))}",
           f"- settings: {json.dumps(metrics['settings'])}"]
    return "\n".join(out) + "\n"


def plot_curves(P: Paths, metrics: dict, png: Path) -> bool:
    rows = {}
    for name in STUDENTS:
        d = P.model_dir(name) / "training"
        rows[name] = [json.loads(x) for f in sorted(d.glob("log.*.jsonl")) for x in f.read_text().splitlines() if x.strip()]
    if not any(rows.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"layer": ("tab:blue", "layer-reduced (15L fp32)"), "quant": ("tab:orange", "quantised (30L W1A8)"),
              "hybrid": ("tab:green", "hybrid: W1A8 stage on the 15L student")}
    for name in STUDENTS:
        data = [r for r in rows[name] if not (name == "hybrid" and r["stage"] == "layer")]
        if not data:
            continue
        offset = 0
        if name == "hybrid":  # continues the layer run's curve
            layer = [r for r in rows["hybrid"] if r["stage"] == "layer"] or rows["layer"]
            offset = layer[-1]["step"] if layer else 0
        color, label = styles[name]
        steps = [offset + r["step"] for r in data]
        loss = [r["loss"] for r in data]
        k = max(1, len(loss) // 200)
        smooth = [sum(loss[max(0, i - k):i + 1]) / len(loss[max(0, i - k):i + 1]) for i in range(len(loss))]
        ax1.plot(steps, smooth, color=color, label=label, linewidth=1.2)
        val = [(offset + r["step"], r["val"]["val_lm_loss"]) for r in data if "val" in r]
        fin = metrics["models"][name].get("train", {}).get("stages", [{}])[-1]
        if fin.get("val_lm_loss") is not None:  # the final validation, after the last step
            val.append((offset + fin["steps"], fin["val_lm_loss"]))
        ax2.plot([v[0] for v in val], [v[1] for v in val], "o-", color=color, label=label, markersize=3)
    ax1.set(xlabel="step (hybrid continues after the layer run)", ylabel="distillation loss (KD + hidden MSE)",
            yscale="log", title="training loss")
    ax2.set(xlabel="step", ylabel="validation next-token loss", title="held-out site-packages files")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle("XTC on SmolLM2-135M", fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return True


def split_into(src: Path, out_dir: Path, prefix: str) -> list[Path]:
    parts = []
    with open(src, "rb") as f:
        i = 0
        while chunk := f.read(PART_BYTES):
            name = f"{prefix}.part-{chr(97 + i // 26)}{chr(97 + i % 26)}"
            (out_dir / name).write_bytes(chunk)
            parts.append(out_dir / name)
            i += 1
    return parts


def pack_model(P: Paths, name: str, tmp: Path) -> Path:
    directory = P.model_dir(name)
    archive = tmp / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        for f in sorted(directory.iterdir()):
            if f.is_file():
                tar.add(f, arcname=f"{name}/{f.name}")
    return archive


def write_report(a, P: Paths, with_models: bool) -> None:
    out = P.out
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():  # what an earlier report of this call wrote (nothing else)
        if f.is_file() and (f.name in ("metrics.json", "results.md", "losses.png", "logs.tar.gz") or ".tar.gz.part-" in f.name):
            f.unlink()
    metrics = collect_metrics(a, P)
    table = results_table(metrics)
    files = []
    if plot_curves(P, metrics, out / "losses.png"):
        files.append(out / "losses.png")
    # logs: driver log, compress logs, per-item predictions, training logs and per-run curves
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for f in [P.env, P.corpus_info, P.calib] + sorted(P.models.glob("*.json")):
            if f.exists():
                tar.add(f, arcname=f"logs/{f.name}")
        for d, prefix in [(P.logs, "logs/run"), (P.evals, "logs/eval")]:
            if d.exists():
                tar.add(d, arcname=prefix)
        for name in STUDENTS:
            t = P.model_dir(name) / "training"
            if t.exists():
                tar.add(t, arcname=f"logs/training-{name}")
    files.append(out / "logs.tar.gz")
    shipped = {}
    if with_models:
        tmp = P.work / "pack"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in ("hybrid", "quant"):
            if not metrics["models"][name].get("ready"):
                continue
            archive = pack_model(P, name, tmp)
            n_parts = -(-archive.stat().st_size // PART_BYTES)
            used = sum(f.stat().st_size for f in files) + 2 * 4096  # metrics.json, results.md
            if len(files) + 2 + n_parts > MAX_OUT_FILES or used + archive.stat().st_size > MAX_OUT_BYTES:
                log(f"report: {name} ({archive.stat().st_size / 1e6:.1f} MB) does not fit what comes back; left out")
                continue
            parts = split_into(archive, out, archive.name)
            files += parts
            shipped[name] = {"archive": archive.name, "parts": [p.name for p in parts],
                             "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                             "join": f"cat {archive.name}.part-* > {archive.name} && tar xzf {archive.name}"}
        shutil.rmtree(tmp, ignore_errors=True)
    metrics["shipped"] = shipped
    write_json(out / "metrics.json", metrics)
    if shipped:
        table += "\nPacked models (join here): " + "; ".join(f"`{s['join']}`" for s in shipped.values()) + "\n"
    (out / "results.md").write_text(table)
    log(f"report: wrote {', '.join(sorted(f.name for f in out.iterdir()))} to {out}")
    print("\n" + table, flush=True)


# -- internal commands (run as subprocesses) -------------------------------------------------------

def cmd_convert(argv: list[str]) -> int:
    from xtc.train.install import convert_gguf

    convert_gguf(Path(argv[0]), Path(argv[1]))
    return 0


def cmd_handoff(argv: list[str]) -> int:
    import torch

    state = torch.load(argv[0], map_location="cpu", weights_only=False)
    state["done"] = True  # the layer stage is what it is, finished or stopped by its time budget
    torch.save(state, argv[1])
    print(f"handed over step {state['step']} from {argv[0]}")
    return 0


def cmd_calibrate(argv: list[str]) -> int:
    """Time a few training steps of each student, exactly as compress trains it."""
    p = argparse.ArgumentParser(prog="run.py _calibrate")
    for flag, kind in [("--teacher", Path), ("--data", Path), ("--out", Path), ("--device", str), ("--seq-len", int),
                       ("--batch-size", int), ("--steps", int), ("--tokens", int), ("--embed-bits", int),
                       ("--keep-layers", str)]:
        p.add_argument(flag, type=kind, required=True)
    a = p.parse_args(argv)
    import tempfile

    import torch

    from xtc.train.data import build_corpus
    from xtc.train.distill import TrainConfig, distill, read_logs
    from xtc.train.pipeline import CompressOptions, build_student
    from xtc.train.load import load_model

    t = time.monotonic()
    loaded = load_model(str(a.teacher))
    teacher = loaded.model
    for q in teacher.parameters():
        q.requires_grad_(False)
    load_s = time.monotonic() - t
    t = time.monotonic()
    corpus = build_corpus([a.data], loaded.tokenizer, a.tokens, seed=0)
    tokenize_s = time.monotonic() - t
    result = {"load_s": round(load_s, 2), "tokens_per_s": (len(corpus.train) + len(corpus.val)) / max(tokenize_s, 1e-3),
              "probe_corpus": corpus.describe(), "seq_len": a.seq_len, "probe_steps": a.steps, "students": {}}
    batch = a.batch_size
    plans = {"layer": ["layer"], "quant": ["quant"], "hybrid": ["layer", "quant"]}
    for name, plan in plans.items():
        opts = CompressOptions(method=name, keep_layers=a.keep_layers, weight_bits=1, act_bits=8, embed_bits=a.embed_bits)
        while True:
            student, kept = build_student(teacher, opts, plan)
            for q in student.parameters():  # as compress does: the copy inherits the teacher's frozen flags
                q.requires_grad_(True)
            cfg = TrainConfig(steps=a.steps, seq_len=a.seq_len, batch_size=batch, lr=1e-5, eval_every=0,
                              checkpoint_every=0, device=a.device, progress=False)
            tmp = Path(tempfile.mkdtemp(prefix="xtc-calib-"))
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            try:
                r = distill(teacher, student, corpus, kept, cfg, tmp / "c.pt", tmp / "log.jsonl", name=name)
            except torch.cuda.OutOfMemoryError:
                del student
                teacher.to("cpu")
                torch.cuda.empty_cache()
                shutil.rmtree(tmp, ignore_errors=True)
                if batch == 1:
                    raise
                batch //= 2
                print(f"{name}: out of memory, batch {batch * 2} -> {batch}", flush=True)
                continue
            rows = read_logs([tmp / "log.jsonl"])
            shutil.rmtree(tmp, ignore_errors=True)
            break
        warm = min(max(1, len(rows) // 5), len(rows) - 1)
        s_per_step = (rows[-1]["elapsed_s"] - rows[warm - 1]["elapsed_s"]) / max(1, len(rows) - warm)
        info = {"batch_size": batch, "s_per_step": round(s_per_step, 4), "first_step_s": rows[0]["elapsed_s"],
                "total_s": round(r.seconds, 2), "first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"],
                "kept_layers": kept}
        if torch.cuda.is_available():
            info["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["students"][name] = info
        print(name, json.dumps(info), flush=True)
        del student
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    write_json(a.out, result)
    return 0


def cmd_eval_worker(argv: list[str]) -> int:
    """Predictions for one shard of the benchmark, exactly as `xtc eval` makes them, one line per item."""
    p = argparse.ArgumentParser(prog="run.py _eval-worker")
    p.add_argument("--model", required=True)
    p.add_argument("--benchmark", type=Path, required=True)
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    from xtc.eval.quality import first_line
    from xtc.infer.complete import Completer
    from xtc.infer.runtime import load_runtime

    items = load_items(a.benchmark)
    done = set()
    if a.out.exists():
        for line in a.out.read_text().splitlines():
            try:
                done.add(json.loads(line)["i"])
            except (ValueError, KeyError):
                pass
    todo = [i for i in shard_indices(min(a.limit, len(items)), a.shard, a.shards) if i not in done]
    if not todo:
        return 0
    t = time.monotonic()
    completer = Completer(load_runtime(a.model, threads=a.threads))
    print(f"loaded {a.model} in {time.monotonic() - t:.1f} s; {len(todo)} items", flush=True)
    with open(a.out, "a") as f:
        for i in todo:
            t = time.monotonic()
            item = items[i]
            text = completer.complete(item["input"], item.get("suffix", ""), max_new_tokens=EVAL_MAX_NEW_TOKENS,
                                      context_tokens=EVAL_CONTEXT_TOKENS).text
            f.write(json.dumps({"i": i, "pred": first_line(text), "s": round(time.monotonic() - t, 3)}) + "\n")
            f.flush()
    return 0


def cmd_verify(argv: list[str]) -> int:
    """Run HERE after the run: score a packed model on the first N items with this machine's CPU and
    compare, item by item, with the predictions the device made (from logs.tar.gz)."""
    p = argparse.ArgumentParser(prog="run.py verify")
    p.add_argument("--model", required=True, help="the joined, unpacked model directory (or an installed name)")
    p.add_argument("--device-preds", type=Path, required=True, help="logs/eval/NAME from logs.tar.gz")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    from xtc.eval.quality import first_line, score_predictions
    from xtc.infer.complete import Completer
    from xtc.infer.runtime import load_runtime

    items = load_items(BENCHMARK)
    device = {}
    for f in sorted(a.device_preds.glob("shard-*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            device[row["i"]] = row["pred"]
    idx = [i for i in range(a.limit) if i in device]
    completer = Completer(load_runtime(a.model, threads=a.threads))
    here = [first_line(completer.complete(items[i]["input"], items[i].get("suffix", ""),
                                          max_new_tokens=EVAL_MAX_NEW_TOKENS,
                                          context_tokens=EVAL_CONTEXT_TOKENS).text) for i in idx]
    gts = [items[i]["gt"] for i in idx]
    s_here, s_dev = score_predictions(here, gts), score_predictions([device[i] for i in idx], gts)
    same = sum(h == device[i] for h, i in zip(here, idx))
    print(json.dumps({"n": len(idx), "identical_predictions": same, "here": s_here, "device": s_dev}))
    for h, i in zip(here, idx):
        if h != device[i]:
            print(f"  item {i}: here {h!r} / device {device[i]!r}")
    return 0 if same == len(idx) else 1


INTERNAL = {"_convert": cmd_convert, "_handoff": cmd_handoff, "_calibrate": cmd_calibrate,
            "_eval-worker": cmd_eval_worker, "verify": cmd_verify}


# -- main -------------------------------------------------------------------------------------------

def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Internal: _convert, _handoff, _calibrate, _eval-worker; here: verify --help")
    p.add_argument("--stage", required=True, help=f"comma-separated: {','.join(STAGES)} or all")
    p.add_argument("--out-dir", type=Path, default=None, help="results (default $OUT)")
    p.add_argument("--work", type=Path, default=None, help="state between calls (default /tmp/xtc-run)")
    p.add_argument("--dry-run", action="store_true", help="tiny CPU profile (with --teacher-dir, --site-dirs)")
    p.add_argument("--teacher-dir", type=Path, help="an HF teacher directory instead of the staged GGUF")
    p.add_argument("--site-dirs", type=Path, nargs="+", help="corpus roots (default: site.getsitepackages())")
    p.add_argument("--minutes", type=float, help="wall clock for this call")
    p.add_argument("--device", choices=["cuda", "cpu"])
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr-layer", type=float)
    p.add_argument("--lr-quant", type=float, help="for the quant run and the hybrid's quantisation stage")
    p.add_argument("--max-tokens", type=int, help="corpus cap per compress run")
    p.add_argument("--corpus-mb", type=float, help="site-packages text sampled into the corpus")
    p.add_argument("--corpus-procs", type=int, default=16)
    p.add_argument("--probe-steps", type=int)
    p.add_argument("--probe-tokens", type=int)
    p.add_argument("--steps", type=int, help="fixed steps per stage instead of the calibrated count")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--split", default="1:1", help="layer:quant share of the time when both run in one call")
    p.add_argument("--limit", type=int, help="benchmark items (the first N)")
    p.add_argument("--shards", type=int)
    p.add_argument("--eval-threads", type=int)
    p.add_argument("--eval-procs-training", type=int)
    p.add_argument("--eval-procs-idle", type=int)
    p.add_argument("--embed-bits", type=int, default=4, choices=[4, 8])
    p.add_argument("--keep-layers", default="odd")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heartbeat-s", type=float, default=30.0)
    a = p.parse_args(argv)
    profile = PROFILES["dry" if a.dry_run else "gpu"]
    for key, value in profile.items():
        if getattr(a, key, None) is None:
            setattr(a, key, value)
    stages = STAGES if a.stage == "all" else [s.strip() for s in a.stage.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    a.stages = [s for s in STAGES if s in stages]
    if a.out_dir is None:
        if not os.environ.get("OUT"):
            p.error("--out-dir is required where $OUT is not set")
        a.out_dir = Path(os.environ["OUT"])
    if a.work is None:
        a.work = Path("/tmp/xtc-run-dry" if a.dry_run else "/tmp/xtc-run")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in INTERNAL:
        return INTERNAL[argv[0]](argv[1:])
    a = parse_args(argv)
    global CLOCK, LOG_FILE
    CLOCK = Clock(a.minutes)
    P = Paths(a.work, a.out_dir)
    for d in (P.work, P.logs, P.models, P.evals):
        d.mkdir(parents=True, exist_ok=True)
    LOG_FILE = P.logs / "driver.log"
    log(f"run.py --stage {','.join(a.stages)}: {a.minutes} min, work {P.work}, out {P.out}"
        f"{' (dry run)' if a.dry_run else ''}")
    pool = EvalPool(a, P)
    report_reserve = 45.0 if "report" in a.stages else 25.0
    status = 0
    try:
        if "receive" in a.stages:
            stage_receive(a, P)
        if "corpus" in a.stages:
            stage_corpus(a, P)
        if "prepare" in a.stages:
            stage_prepare(a, P, pool)
        students = [s for s in STUDENTS if s in a.stages]
        shares = dict(zip(["layer", "quant"], (float(x) for x in a.split.split(":"))))
        for i, name in enumerate(students):
            rest = [s for s in students[i:] if s == name or not P.done_marker(s).exists()]
            reserve = report_reserve
            if name == "hybrid" and "eval" in a.stages:
                reserve += hybrid_eval_estimate(a, P)
            available = CLOCK.left() - reserve
            weight = sum(shares.get(s, 1.0) for s in rest)
            budget = available * shares.get(name, 1.0) / weight
            if budget < a.startup_s + a.final_s + 40 and not a.steps and not P.done_marker(name).exists():
                log(f"{name}: only {budget:.0f} s left in this call: skipped (run it in the next call)")
                continue
            stage_student(name, a, P, CLOCK, pool, budget)
        if "eval" in a.stages:
            stage_eval(a, P, CLOCK, pool, report_reserve)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            log(f"STOPPED: {exc.code}")
            status = 1
    finally:
        pool.stop()
        try:
            write_report(a, P, with_models="report" in a.stages)
        except Exception as exc:  # the report must not hide the run's own error
            log(f"report failed: {exc!r}")
            status = status or 1
    log(f"done in {CLOCK.elapsed():.0f} s")
    return status


def hybrid_eval_estimate(a, P: Paths) -> float:
    """Seconds to evaluate the hybrid after its training, from the teacher's measured speed: half the
    layers, but a weak student writes longer lines (an untrained 1-bit one ran 2x slower per item
    than the teacher here), so 0.8x the teacher, plus 30%; a default before anything was measured."""
    preds = read_predictions(P, "teacher", a.limit)
    per_item = sorted(r["s"] for r in preds.values())
    if per_item:
        teacher_s = per_item[len(per_item) // 2]
    else:
        teacher_s = 2.0 if a.device == "cuda" else 0.5
    workers = max(1, min(a.shards, a.eval_procs_idle))
    waves = -(-a.shards // workers)
    items_per_shard = -(-a.limit // a.shards)
    return 15.0 + 1.3 * 0.8 * teacher_s * items_per_shard * waves


if __name__ == "__main__":
    raise SystemExit(main())
