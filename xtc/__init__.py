"""XTC extreme compression for code language models: layer reduction, 1-bit weights,
8-bit activations, knowledge distillation, bit packing and a CPU runtime."""

__version__ = "0.1.0"
