"""Methods that e3rl adds to vLLM's worker (`worker_extension_cls`), reached by `collective_rpc`.

vLLM mixes this class into its worker class, so `self` is the worker. Imported by vLLM inside
the worker, never by e3rl code paths that run without vLLM.
"""

from __future__ import annotations

import torch


class WeightSyncExtension:
    def e3rl_load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> list[str]:
        """Copies transformers-named tensors into the served model; returns the names of vLLM
        parameters that received none (empty when every parameter was overwritten).

        Goes through vLLM's in-place `reload_weights`, not the model's `load_weights` alone:
        after loading, vLLM turns weights into kernel formats (on CPU it repacks every linear
        layer for oneDNN and drops the original parameter), and only the reload path restores
        the checkpoint layout, loads, and repacks again.
        """
        model = self.model_runner.get_model()
        expected = {name for name, _ in model.named_parameters()}
        loaded: set[str] = set()
        load = model.load_weights

        def recording_load(weights):  # the reload calls model.load_weights: note what it loaded
            names = load(weights)
            loaded.update(names)
            return names

        model.load_weights = recording_load
        try:
            self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        finally:
            del model.load_weights  # back to the class's method
        return sorted(expected - loaded)
