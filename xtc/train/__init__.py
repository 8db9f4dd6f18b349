"""The compression side (torch): architectures, corpus, layer reduction, quantisation, distillation,
the recipe, packing, loading and installing teachers."""
