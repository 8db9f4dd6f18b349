"""Does the `<filename>NAME` header (what the server puts before a non-Python file) help the model?

    python benchmarks/filename_header.py [--model smollm2] [--per-language 4] [--cuts 3] [--json] DIR [DIR ...]

Takes up to `--per-language` files (3 to 60 kB, not minified) of each of a few languages from the
directories (walked recursively; e.g. node_modules, /usr/include, /usr/share), and compares the
model with and without the header (`Completer.header`):
- loss (nats per token) and greedy next-token accuracy over the first `--tokens` tokens of each
  file, and over its first 64 tokens (teacher forcing: the same content tokens either way);
- whole-line completions through `Completer.complete` (as the server gives them) at `--cuts`
  random points per file: exact match and edit similarity of the rest of the line.
Not a test: prints a table, or JSON. docs/editors.md quotes one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LANGUAGES = {"js": "javascript", "ts": "typescript", "go": "go", "c": "c", "php": "php", "lua": "lua",
             "sh": "shellscript", "html": "html", "css": "css", "cs": "csharp"}


def find_files(dirs: list[Path], per_language: int, seed: int) -> list[Path]:
    found: dict[str, list[Path]] = {ext: [] for ext in LANGUAGES}
    for root in dirs:
        for dirpath, _, names in os.walk(root):
            for name in names:
                ext = name.rsplit(".", 1)[-1]
                if ext in found and len(found[ext]) < 300 and ".min." not in name:
                    path = Path(dirpath) / name
                    try:
                        if 3000 < path.stat().st_size < 60000:
                            found[ext].append(path)
                    except OSError:
                        pass
    rng = random.Random(seed)
    chosen = []
    for paths in found.values():
        rng.shuffle(paths)
        chosen += paths[:per_language]
    return chosen


def teacher_forced(rt, header_ids: list[int], content: list[int]) -> tuple[float, float, float, float]:
    """(loss, accuracy, loss over the first 64, accuracy over the first 64) of content[1:]."""
    rt.reset()
    logits = rt.forward(header_ids + content, all_logits=True).astype(np.float64)
    logits = logits[len(header_ids):len(header_ids) + len(content) - 1]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    targets = np.array(content[1:])
    nll = -logp[np.arange(len(targets)), targets]
    hit = logits.argmax(-1) == targets
    return float(nll.mean()), float(hit.mean()), float(nll[:64].mean()), float(hit[:64].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", type=Path, nargs="+")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--per-language", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=384)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from rapidfuzz import fuzz

    from xtc.infer.complete import Completer
    from xtc.infer.runtime import load_runtime

    rt = load_runtime(args.model)
    completer = Completer(rt)
    tok = rt.tokenizer
    rng = random.Random(args.seed + 1)
    forced = {"raw": [], "header": []}
    lines = {"raw": [], "header": []}
    files = find_files(args.dirs, args.per_language, args.seed)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        language = LANGUAGES[path.suffix[1:]]
        header = completer.header(path.name, language)
        if not header:
            sys.exit(f"{args.model} has no <filename> token: nothing to compare")
        content = tok(text, add_special_tokens=False)["input_ids"][:args.tokens]
        forced["raw"].append(teacher_forced(rt, [], content))
        forced["header"].append(teacher_forced(rt, tok(header, add_special_tokens=False)["input_ids"], content))
        rows = text.split("\n")
        starts = [i for i in range(3, min(len(rows), 150)) if len(rows[i].strip()) > 8]
        for i in rng.sample(starts, min(args.cuts, len(starts))):
            row = rows[i]
            indent = len(row) - len(row.lstrip())
            cut = rng.randint(indent, len(row) - 3)
            before, want = "\n".join(rows[:i] + [row[:cut]]), row[cut:].strip()
            for variant, name in (("raw", ""), ("header", path.name)):
                rt.reset()
                got = completer.complete(before, filename=name, language=language).text.strip()
                lines[variant].append((got == want, fuzz.ratio(got, want)))
        print(f"{path}: done", file=sys.stderr, flush=True)
    result = {"model": args.model, "files": len(forced["raw"]), "cuts": len(lines["raw"])}
    for variant in ("raw", "header"):
        f = np.array(forced[variant])
        result[variant] = {"loss": round(f[:, 0].mean(), 3), "accuracy": round(100 * f[:, 1].mean(), 1),
                           "loss_first64": round(f[:, 2].mean(), 3), "accuracy_first64": round(100 * f[:, 3].mean(), 1),
                           "exact_match": round(100 * np.mean([e for e, _ in lines[variant]]), 1),
                           "edit_similarity": round(np.mean([s for _, s in lines[variant]]), 1)}
    result["files_lower_loss"] = int(sum(h[0] < r[0] for r, h in zip(forced["raw"], forced["header"])))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['model']}: {result['files']} files, {result['cuts']} line cuts; "
          f"header lowers the loss in {result['files_lower_loss']} files")
    keys = ("loss", "accuracy", "loss_first64", "accuracy_first64", "exact_match", "edit_similarity")
    print(f"{'':8}" + "".join(f"{k:>18}" for k in keys))
    for variant in ("raw", "header"):
        print(f"{variant:8}" + "".join(f"{result[variant][k]:>18}" for k in keys))


if __name__ == "__main__":
    main()
