"""What runs in the editor: compiled kernels, the runtime and its spec builders, the tokenizer and the
one completion function. Never imports torch or xtc.train when imported."""
