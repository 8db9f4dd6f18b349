"""The key/value cache: every layer's keys and values for the tokens fed so far, kept across calls
so that a prompt sharing a prefix with the last one re-reads only what changed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PANEL = 16  # positions per key panel (the attention kernel reads 16 keys x head dim contiguously)


@dataclass
class KVCache:
    """Per layer: keys (kv heads, capacity / 16, head dim, 16) and values (kv heads, capacity, head
    dim); `length` positions are valid and `tokens` are the ids they came from."""

    keys: list
    values: list
    length: int = 0
    tokens: list[int] = field(default_factory=list)

    @classmethod
    def allocate(cls, layers: int, kv_heads: int, head_dim: int, context: int) -> "KVCache":
        """Room for `context` positions, rounded up to whole panels."""
        cap = -(-context // PANEL) * PANEL
        # np.zeros maps untouched pages lazily: only the context actually used costs memory.
        return cls([np.zeros((kv_heads, cap // PANEL, head_dim, PANEL), np.float32) for _ in range(layers)],
                   [np.zeros((kv_heads, cap, head_dim), np.float32) for _ in range(layers)])

    @property
    def capacity(self) -> int:
        return self.values[0].shape[1] if self.values else 0

    def pointers(self) -> list[tuple[int, int]]:
        """Raw addresses of each layer's keys and values, for the kernels."""
        return [(k.ctypes.data, v.ctypes.data) for k, v in zip(self.keys, self.values)]

    def store(self, layer: int, start: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Write (n, kv heads, head dim) keys and values at positions start .. start + n - 1."""
        pos = np.arange(start, start + len(keys))
        self.keys[layer][:, pos // PANEL, :, pos % PANEL] = keys
        self.values[layer][:, start:start + len(keys)] = values.transpose(1, 0, 2)

    def keep_prefix(self, ids: list[int]) -> int:
        """Keep the cached positions `ids` starts with, but at least one id to feed; how many are kept."""
        common, limit = 0, min(len(self.tokens), len(ids) - 1)
        while common < limit and self.tokens[common] == ids[common]:
            common += 1
        self.length = common
        del self.tokens[common:]
        return common

    def clear(self) -> None:
        self.length = 0
        self.tokens.clear()
