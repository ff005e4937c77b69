"""A KV cache for the rollout loop that writes new positions into room allocated ahead.

transformers' DynamicCache concatenates every layer's keys and values with each new token:
`torch.cat` copies the whole cache at every step, a cost quadratic in the response length (about
a quarter of the rollout time at 64 new tokens on CPU). `new_cache(room)` returns a DynamicCache
whose layers keep a buffer with `room` free positions and write into it in place. Keys and values
handed to attention are views of the filled part: the same numbers as with a plain cache.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers import DynamicCache

try:  # transformers >= 4.56 builds its caches from per-layer objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers: a plain DynamicCache only
    DynamicLayer = None


def cache_kwarg(model) -> str:
    """The name of `model.forward`'s cache argument: transformers >= 5.2x renamed
    `past_key_values` to `cache` (and warns on the old name); older versions know only the old."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    params = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(room: int) -> DynamicCache:
    """A DynamicCache with `room` positions allocated ahead in each layer (a plain one where this
    transformers version builds its caches differently)."""
    cache = DynamicCache()
    if (
        DynamicLayer is not None
        and getattr(cache, "layer_class_to_replicate", None) is DynamicLayer
    ):
        cache.layer_class_to_replicate = functools.partial(RoomyLayer, room)
    return cache


if DynamicLayer is not None:
    _LAZY_INIT_TAKES_VALUES = (
        "value_states" in inspect.signature(DynamicLayer.lazy_initialization).parameters
    )

    class RoomyLayer(DynamicLayer):
        """One layer's keys and values in buffers of shape [batch, heads, capacity, head_dim]."""

        def __init__(self, room: int) -> None:
            super().__init__()
            self.room = room
            self.length = 0
            self._k: torch.Tensor | None = None
            self._v: torch.Tensor | None = None

        def update(self, key_states, value_states, *args, **kwargs):
            # transformers >= 4.57 tracks `is_initialized` and initialises from keys and values;
            # 4.56 checks `keys is None` and initialises from the keys alone
            if not getattr(self, "is_initialized", self.keys is not None):
                if _LAZY_INIT_TAKES_VALUES:
                    self.lazy_initialization(key_states, value_states)
                else:
                    self.lazy_initialization(key_states)
            n = key_states.shape[-2]
            if self._k is None or self.length + n > self._k.shape[-2]:
                self._grow(key_states, value_states, self.length + n + self.room)
            self._k[:, :, self.length : self.length + n] = key_states
            self._v[:, :, self.length : self.length + n] = value_states
            self.length += n
            self._views()
            return self.keys, self.values

        def _grow(self, k: torch.Tensor, v: torch.Tensor, capacity: int) -> None:
            new_k = k.new_empty((*k.shape[:2], capacity, k.shape[3]))
            new_v = v.new_empty((*v.shape[:2], capacity, v.shape[3]))
            if self.length:
                new_k[:, :, : self.length] = self._k[:, :, : self.length]
                new_v[:, :, : self.length] = self._v[:, :, : self.length]
            self._k, self._v = new_k, new_v

        def _views(self) -> None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]

        def get_seq_length(self) -> int:
            return self.length

        def _rows(self, index: torch.Tensor) -> None:
            if self.length:
                self._k = self._k.index_select(0, index.to(self._k.device))
                self._v = self._v.index_select(0, index.to(self._v.device))
                self._views()

        def reorder_cache(self, beam_idx: torch.Tensor) -> None:
            self._rows(beam_idx)

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._rows(indices)

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.length:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._views()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop takes a negative count, got {tokens_to_remove}")
            self.length = max(self.length + tokens_to_remove, 0)
            if self._k is not None:
                self._views()


def has_room(cache) -> bool:
    """Whether every layer of `cache` is a RoomyLayer (lean decoding writes into those)."""
    layers = getattr(cache, "layers", None)
    return (
        DynamicLayer is not None and bool(layers) and all(isinstance(x, RoomyLayer) for x in layers)
    )
