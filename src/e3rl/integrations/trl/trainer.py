"""``E3GRPOTrainer``: TRL 1.16's ``GRPOTrainer`` with e3rl's budget, temperature and length bias.

One class to change for a TRL user; every hook is a small override that delegates to TRL:

============================================  ==================================================
``_generate_and_score_completions``           round start: close the previous round (entropy ->
                                              controller), set the round's temperature, split
                                              the generation batch over its prompts by e3rl's
                                              allocation, then TRL generates and scores; the
                                              advantages TRL computed on ``view(-1, G)`` blocks
                                              are replaced by e3rl's on the real groups
``_calculate_rewards``                        raw rewards -> difficulty tracker, length bias,
                                              ragged advantages
``_generate_single_turn``                     every row generated on its own (``n=1``), so vLLM
                                              server mode does not take ``prompts[::G]``
``_get_per_token_logps_and_entropies``        token-weighted entropy of the loss passes
``training_step``                             marks the round's first pass; closes the round
                                              at its last micro-step
``_save_checkpoint`` /                        ``e3rl_state.json`` in TRL's checkpoint folder
``_load_optimizer_and_scheduler``             (TRL's own adaptive-entropy state does the same)
============================================  ==================================================

The temperature reaches generation (``generation_config`` / ``generation_kwargs`` for
transformers, ``vllm_generation.temperature`` for vLLM) and the loss: TRL 1.16 bakes
``args.temperature`` into the closure of the fused LM head it adds at init; the adapter keeps
that closure's cell and rewrites it each round, so the old/ref/training log-probabilities are
those of softmax(logits / T) at the temperature that sampled the round.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import GRPOTrainer

from e3rl.config import ConfigError, check_method
from e3rl.control import E3Control
from e3rl.integrations.trl.rounds import (
    Round,
    advantage_mode,
    expand_rows,
    ragged_advantages,
    sampler_groups,
    zero_std_fraction,
)
from e3rl.integrations.verl.control import E3rlSettings, prompt_id_of, verl_metrics

__all__ = ["E3GRPOTrainer", "STATE_FILE"]

logger = logging.getLogger(__name__)
STATE_FILE = "e3rl_state.json"


def _find_temperature_cell(module: torch.nn.Module) -> Any:
    """The cell, looked for through what may wrap TRL's function: a bound method, accelerate's
    autocast / fp32-output wrappers (``functools.wraps``: ``__wrapped__``), the forward accelerate
    keeps as ``_original_forward``."""
    todo = [getattr(module, "forward", None), getattr(module, "_original_forward", None)]
    seen: set[int] = set()
    while todo:
        fn = todo.pop()
        fn = getattr(fn, "__func__", fn)
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        code, closure = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
        if code is not None and closure and "temperature" in code.co_freevars:
            return closure[code.co_freevars.index("temperature")]
        todo.append(getattr(fn, "__wrapped__", None))
    return None


class _TemperatureCell:
    """The ``temperature`` closure cell of one model's fused LM head (TRL's ``add_fused_lm_head``).

    Rewriting the cell changes the temperature of every later call, whatever wrapped the forward
    since (accelerate's autocast wrapper calls the same function object), without re-patching.
    """

    def __init__(self, module: torch.nn.Module, what: str) -> None:
        cell = _find_temperature_cell(module)
        if cell is None:
            raise RuntimeError(
                f"{what}: TRL's fused LM head keeps no 'temperature' closure here; this adapter "
                "supports trl==1.16 (install e3rl[trl])"
            )
        self.cell = cell

    def set(self, value: float) -> None:
        self.cell.cell_contents = float(value)

    def get(self) -> float:
        return float(self.cell.cell_contents)


class E3GRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose rollout counts, temperature and rewards are steered by e3rl.

    ``e3rl`` takes the keys of the verl adapter's ``e3rl`` section (``budget``,
    ``temperature_control``, ``temperature``, ``length_bias``, ``seed``) with the same
    validation. ``args.num_generations`` is the mean rollouts per prompt: each generation round
    spends exactly its ``generation_batch_size`` completions.
    """

    def __init__(self, *args: Any, e3rl: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.e3rl_settings = E3rlSettings.from_mapping(e3rl)
        super().__init__(*args, **kwargs)
        self._e3rl_check_args()
        self.e3rl_advantage_mode = advantage_mode(self.args.scale_rewards)
        self.e3rl: E3Control | None = None  # built when training starts (needs its length)
        self._e3rl_round: Round | None = None
        self._e3rl_first_pass = False
        # the module TRL patched: the base model under a PEFT adapter
        policy = self.model.get_base_model() if is_peft_model(self.model) else self.model
        self._e3rl_cells = [_TemperatureCell(policy, "policy")]
        if self.ref_model is not None:
            self._e3rl_cells.append(_TemperatureCell(self.ref_model, "reference model"))

    # ---- set-up

    def _e3rl_check_args(self) -> None:
        args = self.args
        if self.accelerator.num_processes != 1:
            raise ConfigError(
                f"E3GRPOTrainer runs in one process (got {self.accelerator.num_processes}): the "
                "allocation splits the whole generation batch, and TRL shards it across processes "
                "by equal blocks of num_generations"
            )
        if args.multi_objective_aggregation != "sum_then_normalize":
            raise ConfigError(
                f"GRPOConfig.multi_objective_aggregation={args.multi_objective_aggregation!r} is "
                "invalid with e3rl: expected 'sum_then_normalize' (e3rl normalises the weighted "
                "sum of rewards within each prompt's group)"
            )
        s = self.e3rl_settings
        check_method(
            s.budget,
            int(args.num_generations),
            s.temperature_control,
            s.temperature,
            n_key="GRPOConfig.num_generations",
            prefix="e3rl.",
            control_key="e3rl.temperature_control",
            fixed_batch="TRL's GRPOTrainer",
        )

    def _e3rl_generate_every(self) -> int:
        return int(self.args.steps_per_generation) * int(self.num_iterations)

    def _e3rl_total_rounds(self) -> int:
        steps = self.args.max_steps if self.args.max_steps > 0 else self.state.max_steps
        micro = max(int(steps), 1) * int(self.args.gradient_accumulation_steps)
        return max(math.ceil(micro / self._e3rl_generate_every()), 1)

    def _e3rl_control(self) -> E3Control:
        if self.e3rl is None:
            s = self.e3rl_settings
            self.e3rl = E3Control.from_config(
                s.budget,
                s.length_bias,
                n=int(self.num_generations),
                initial_temperature=float(self.args.temperature),
                vocab_size=int(self.model.config.get_text_config().vocab_size),
                total_steps=self._e3rl_total_rounds(),  # the controller moves once per round
                seed=s.seed,
                temperature=s.temperature if s.temperature_control == "entropy" else None,
            )
            column = getattr(self.train_dataset, "column_names", None) or []
            if "prompt" in column:  # map-style: ranks are positions among all training prompts
                self.e3rl.register([prompt_id_of(p) for p in self.train_dataset["prompt"]])
        return self.e3rl

    # ---- temperature

    @property
    def e3rl_temperature(self) -> float:
        """The temperature generation and the loss use now."""
        return float(self.temperature)

    def _e3rl_set_temperature(self, value: float) -> None:
        value = float(value)
        self.temperature = value
        if getattr(self, "generation_config", None) is not None:
            self.generation_config.temperature = value
        if getattr(self, "generation_kwargs", None) is not None:
            # TRL also passes these to unwrap_model_for_generation, which overrides the model's
            # generation config with them
            self.generation_kwargs["temperature"] = value
        if self.use_vllm:
            self.vllm_generation.temperature = value
        for cell in self._e3rl_cells:
            cell.set(value)

    # ---- one round

    def _e3rl_close_round(self) -> None:
        """Feed the finished round's entropy to the controller; log the round's metrics."""
        rnd, self._e3rl_round = self._e3rl_round, None
        if rnd is None or self.e3rl is None:
            return
        self._e3rl_log(self.e3rl.observe_entropy(rnd.entropy()))

    def _e3rl_log(self, metrics: Mapping[str, Any]) -> None:
        """Into TRL's metric lists (averaged at each log, so in ``state.log_history``)."""
        for key, value in verl_metrics(metrics).items():
            self._metrics["train"][key].append(value)
        for notice in self.e3rl.notices():
            logger.warning("e3rl: %s", notice)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:  # evaluation: TRL's own uniform groups
            return super()._generate_and_score_completions(inputs)
        control = self._e3rl_control()
        self._e3rl_close_round()  # normally closed by training_step; open after a resume
        control.set_epoch(int(self.state.epoch or 0))
        slots = sampler_groups(
            inputs, int(self.num_generations), lambda x: prompt_id_of(x["prompt"])
        )
        # Exactly the generation batch TRL sized its steps by, split over this round's prompts.
        allocation = control.plan([pid for _, pid in slots], budget=len(inputs))
        rows, group_of_row = expand_rows(inputs, [first for first, _ in slots], allocation.counts)
        self._e3rl_set_temperature(allocation.temperature)
        self._e3rl_round = Round(
            prompt_ids=list(allocation.prompt_ids),
            counts=list(allocation.counts),
            ranks=list(allocation.ranks),
            group_of_row=group_of_row,
            temperature=allocation.temperature,
        )
        output = super()._generate_and_score_completions(rows)
        rnd = self._e3rl_round
        if rnd.advantages is None:
            raise RuntimeError("TRL scored the round without calling _calculate_rewards")
        output["advantages"] = rnd.advantages.to(output["advantages"].device)
        self._e3rl_fix_trl_logs(rnd)
        return output

    def _e3rl_fix_trl_logs(self, rnd: Round) -> None:
        """TRL's own per-group figures were taken on ``view(-1, G)`` blocks: redo them."""
        train = self._metrics["train"]
        if train.get("frac_reward_zero_std"):
            train["frac_reward_zero_std"][-1] = rnd.zero_std
        logged = self._logs["advantages"]
        n = len(rnd.group_of_row)
        if len(logged) >= n:
            for _ in range(n):
                logged.pop()
            logged.extend(rnd.advantages.tolist())
        self._e3rl_log(rnd.metrics)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        rnd = self._e3rl_round
        if rnd is None or not self.model.training:
            return rewards_per_func
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        raw = rewards.tolist()
        scored = [i for i, r in enumerate(raw) if not math.isnan(r)]
        pids = rnd.row_prompt_ids()
        shaped_scored, metrics = self.e3rl.observe_rewards(
            [pids[i] for i in scored],
            [raw[i] for i in scored],
            [len(completion_ids_list[i]) for i in scored],
        )
        shaped = [math.nan] * len(raw)
        for i, s in zip(scored, shaped_scored, strict=True):
            shaped[i] = s
        rnd.advantages = ragged_advantages(
            torch.tensor(shaped), rnd.group_of_row, self.e3rl_advantage_mode
        )
        rnd.metrics = metrics
        rnd.zero_std = zero_std_fraction(shaped, rnd.group_of_row)
        return rewards_per_func

    def _generate_single_turn(
        self, prompt_ids, images, multimodal_fields, num_generations, *a, **kw
    ):
        if self.model.training and self._e3rl_round is not None:
            # Rows of one prompt are already repeated per its count; vLLM server mode would
            # otherwise generate `num_generations` for every `num_generations`-th row.
            num_generations = 1
        return super()._generate_single_turn(
            prompt_ids, images, multimodal_fields, num_generations, *a, **kw
        )

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, *a, **kw
    ):
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *a, **kw
        )
        rnd = self._e3rl_round
        if entropies is not None and rnd is not None and self._e3rl_first_pass:
            # The loss pass of each slice at its first iteration: the round's on-policy tokens,
            # entropy of softmax(logits / T) at the sampling temperature.
            mask = attention_mask[:, -logits_to_keep:].to(entropies.dtype)
            rnd.add_entropy(float((entropies.detach() * mask).sum()), float(mask.sum()))
        return logps, entropies, aux

    def training_step(self, model, inputs, num_items_in_batch):
        every = self._e3rl_generate_every()
        self._e3rl_first_pass = self._step % every < int(self.args.steps_per_generation)
        try:
            out = super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._e3rl_first_pass = False
        if self._step % every == 0:  # the round's last micro-step is done
            self._e3rl_close_round()
        return out

    # ---- checkpoints

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if not self.args.should_save or self.e3rl is None:
            return
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}"
        )
        rnd = self._e3rl_round
        state = {
            "control": self.e3rl.state_dict(),
            # a round still open (saved between its optimizer steps): its entropy so far
            "open_round": None
            if rnd is None
            else {"entropy_sum": rnd.entropy_sum, "entropy_tokens": rnd.entropy_tokens},
        }
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump(state, f)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"resuming from {checkpoint} but {path} is missing: the checkpoint was not written "
                "by E3GRPOTrainer (its difficulty tracker and temperature would start over)"
            )
        with open(path) as f:
            state = json.load(f)
        control = self._e3rl_control()
        control.load_state_dict(state["control"])
        self._e3rl_set_temperature(control.temperature)
        open_round = state.get("open_round")
        if open_round is not None:
            # TRL regenerates after a resume (its buffer is empty): the next round start closes
            # this one with the entropy it had seen.
            self._e3rl_round = Round([], [], [], [], control.temperature)
            self._e3rl_round.add_entropy(open_round["entropy_sum"], open_round["entropy_tokens"])
