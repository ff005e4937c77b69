"""verl's synchronous v1 PPO trainer with e3rl's budget, temperature control and length bias.

:class:`E3rlSyncTrainer` subclasses ``verl.trainer.ppo.v1.PPOTrainerSync`` and overrides five of
its steps, each delegating to verl for the real work:

========================  ==================================================================
``_init_dataloader``      builds the single :class:`E3rlControl` (driver side) and registers
                          every training prompt with the difficulty tracker
``prepare_step``          sets ``actor_rollout_ref.rollout.temperature`` on the driver to the
                          controller's temperature: verl passes that value to the actor with
                          every ``compute_log_prob`` / ``update_actor`` call
``_next_train_batch``     allocates per-prompt counts -> ``__rollout_n__``, and writes the
                          temperature into every prompt for the ``e3rl_single_turn`` agent loop;
                          with ``e3rl.candidates_per_step`` it offers the deferred prompts and
                          fresh ones from verl's dataloader and lets the control choose
``_compute_old_log_prob`` reads the actor's per-token entropies back and keeps their
                          token-weighted mean (at the temperature that sampled them)
``_compute_advantage``    feeds raw rewards to the tracker, applies the length bias to the
                          rewards in TransferQueue, then runs verl's advantage computation
``step``                  after verl's update: entropy -> controller -> next temperature
========================  ==================================================================

Only ``trainer.v1.trainer_mode=sync`` is supported: in the async modes a batch mixes samples
generated under several temperatures and policies, and one log-prob temperature per batch
would be wrong.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from typing import Any

import numpy as np
import transfer_queue as tq
from omegaconf import DictConfig, OmegaConf, open_dict
from tensordict import TensorDict
from verl.trainer.ppo.v1 import PPOTrainerSync
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.rl_dataset import collate_fn

import e3rl.integrations.verl.algos  # noqa: F401  (registers e3rl_grpo/drgrpo/rloo, e3rl_ppo)
from e3rl.config import ConfigError
from e3rl.integrations.verl.batch import (
    add_at_last_token,
    annotate_batch,
    final_session_rows,
    non_tensor_list,
    sums_per_row,
    token_weighted_entropy,
)
from e3rl.integrations.verl.control import Allocation, E3rlControl, E3rlSettings, prompt_id_of

__all__ = ["E3rlSyncTrainer", "STATE_FILE", "check_config"]

logger = logging.getLogger(__name__)
STATE_FILE = "e3rl_state.json"


def check_config(config: DictConfig) -> E3rlSettings:
    """Reject verl settings the integration cannot honour; return the parsed ``e3rl`` section."""
    mode = config.trainer.v1.trainer_mode
    if mode != "sync":
        raise ConfigError(
            f"trainer.v1.trainer_mode={mode!r} is invalid: expected 'sync' (e3rl's temperature "
            "and budget are decided per step; async modes mix steps in one batch)"
        )
    sync_step = config.trainer.v1.get("sync", {}).get("parameter_sync_step", 1)
    if sync_step != 1:
        raise ConfigError(
            f"trainer.v1.sync.parameter_sync_step={sync_step} is invalid: expected 1 "
            "(one generation and one temperature per training step)"
        )
    raw = config.get("e3rl", None)
    raw = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else raw
    settings = E3rlSettings.from_mapping(raw)
    tbs = config.data.train_batch_size
    mini = config.actor_rollout_ref.actor.ppo_mini_batch_size
    if tbs % mini != 0:
        # verl pads each step to a multiple of ppo_mini_batch_size * rollout.n samples; with a
        # budget of exactly rollout.n * train_batch_size no padding is needed iff this divides.
        raise ConfigError(
            f"data.train_batch_size={tbs} is invalid: expected a multiple of "
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}"
        )
    return settings


class E3rlSyncTrainer(PPOTrainerSync):
    """verl's sync trainer driven by one :class:`E3rlControl` on the driver."""

    def __init__(self, config: DictConfig) -> None:
        self.e3rl_settings = check_config(config)
        super().__init__(config)
        self.e3rl: E3rlControl | None = None
        # uid (fresh per sampled prompt) -> (stable prompt id, rank the allocator saw)
        self._e3rl_uids: dict[str, tuple[str, float]] = {}
        self._e3rl_entropy = math.nan
        self._e3rl_submitted = 0  # prompts submitted this step (selection)

    # ---- set-up

    def _init_dataloader(self) -> None:
        super()._init_dataloader()
        rollout = self.config.actor_rollout_ref.rollout
        self.e3rl = E3rlControl(
            self.e3rl_settings,
            n=int(rollout.n),
            initial_temperature=float(rollout.temperature),
            vocab_size=len(self.tokenizer),
            total_steps=int(self.total_training_steps),
            batch_size=int(self.config.data.train_batch_size),
        )
        dataset = self.train_dataset
        column = dataset.dataframe[dataset.prompt_key]
        ids = [prompt_id_of(m) for m in column]
        self.e3rl.register(ids)
        # Selection rebuilds deferred prompts from the dataset: id -> its first row.
        self._e3rl_rows = {pid: i for i, pid in reversed(list(enumerate(ids)))}
        logger.info("e3rl: tracking %d training prompts", len(self.e3rl.tracker))

    def _e3rl_state_path(self) -> str:
        folder = os.path.join(
            self.config.trainer.default_local_dir, f"global_step_{self.global_steps}"
        )
        if (
            self.config.trainer.resume_mode == "resume_path"
            and self.config.trainer.resume_from_path
        ):
            folder = self.config.trainer.resume_from_path
        return os.path.join(os.path.abspath(folder), STATE_FILE)

    def _save_checkpoint(self) -> None:
        super()._save_checkpoint()
        path = os.path.join(
            os.path.abspath(self.config.trainer.default_local_dir),
            f"global_step_{self.global_steps}",
            STATE_FILE,
        )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.e3rl.state_dict(), f)

    def _load_checkpoint(self) -> Any:
        out = super()._load_checkpoint()
        if self.global_steps > 0:
            path = self._e3rl_state_path()
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"resuming at step {self.global_steps} but {path} is missing: the checkpoint "
                    "was not written by the e3rl trainer"
                )
            with open(path) as f:
                self.e3rl.load_state_dict(json.load(f))
        return out

    # ---- one step

    def prepare_step(self) -> dict:
        epoch = (self.global_steps - 1) // max(int(self.steps_per_epoch), 1)
        self.e3rl.set_epoch(max(epoch, 0))
        with open_dict(self.config):
            # The driver's value is what verl sends to the actor for log-probs and the update.
            self.config.actor_rollout_ref.rollout.temperature = self.e3rl.temperature
        self._e3rl_entropy = math.nan
        return super().prepare_step()

    def _next_train_batch(self, num_prompts: int | None = None) -> TensorDict:
        step_batch = num_prompts in (None, int(self.config.data.train_batch_size))
        if self.e3rl.selecting and step_batch:  # refills (num_prompts set) are not selected
            chosen = self.e3rl.select(self.e3rl.candidates(self._e3rl_fetch_ids))
            # Only the prompts that get rollouts go to verl: its replay buffer samples a step's
            # prompts by count (see _step_once), so deferred ones must not be submitted.
            keep = [i for i, c in enumerate(chosen.counts) if c > 0]
            allocation = Allocation(
                *([x[i] for i in keep] for x in (chosen.prompt_ids, chosen.counts, chosen.ranks)),
                chosen.temperature,
            )
            ids = allocation.prompt_ids
            batch = self._e3rl_batch_of(ids)
            self._e3rl_submitted = len(ids)
        else:
            batch = super()._next_train_batch(num_prompts)
            ids = [prompt_id_of(m) for m in non_tensor_list(batch["raw_prompt"])]
            allocation = self.e3rl.allocate(ids)
        annotate_batch(batch, allocation)
        for uid, pid, rank in zip(
            non_tensor_list(batch["uid"]), allocation.prompt_ids, allocation.ranks, strict=True
        ):
            self._e3rl_uids[str(uid)] = (pid, float(rank))
        return batch

    def _step_once(self, metrics: dict, timing_raw: dict, sample_batch_size: int) -> Any:
        # verl takes train_batch_size prompts from its replay buffer; with selection a step
        # submits the chosen prompts only, as many as the allocator funded (value: it varies).
        if self.e3rl.selecting:
            sample_batch_size = self._e3rl_submitted
        return super()._step_once(metrics, timing_raw, sample_batch_size)

    def _e3rl_fetch_ids(self) -> list[str]:
        """Ids of the next ``gen_batch_size`` prompts of verl's dataloader (its order, epochs
        and state); the rows themselves are rebuilt by :meth:`_e3rl_batch_of`."""
        chunk = self._fetch_one_gen_batch()
        return [prompt_id_of(m) for m in non_tensor_list(chunk["raw_prompt"])]

    def _e3rl_batch_of(self, ids: list[str]) -> TensorDict:
        """The prompt batch of ``ids`` as verl's dataloader would build it (the dataset's rows
        through its ``collate_fn``), each with a fresh ``uid``: a deferred prompt offered again
        is a new sampling of it."""
        rows = collate_fn([self.train_dataset[self._e3rl_rows[p]] for p in ids])
        rows["uid"] = np.array([str(uuid.uuid4()) for _ in ids], dtype=object)
        batch = tu.get_tensordict(rows)
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        return batch

    def _compute_old_log_prob(self, batch: Any, metrics: dict) -> Any:
        batch = super()._compute_old_log_prob(batch, metrics)
        rc = self.config.algorithm.get("rollout_correction", None)
        if rc and rc.get("bypass_mode", False):
            return batch  # verl computes no entropy in bypass mode: the controller skips the step
        keys = [k for k, t in zip(batch.keys, batch.tags, strict=True) if not t.get("is_padding")]
        data = tq.kv_batch_get(
            keys=keys, partition_id=batch.partition_id, select_fields=["entropy", "response_mask"]
        )
        self._e3rl_entropy = token_weighted_entropy(data["entropy"], data["response_mask"])
        return batch

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        real = [k for k, t in zip(batch.keys, batch.tags, strict=True) if not t.get("is_padding")]
        keys = [real[i] for i in final_session_rows(real)]
        data = tq.kv_batch_get(
            keys=keys,
            partition_id=batch.partition_id,
            select_fields=["uid", "rm_scores", "response_mask"],
        )
        uids = [str(u) for u in non_tensor_list(data["uid"])]
        known = [i for i, u in enumerate(uids) if u in self._e3rl_uids]
        raw = sums_per_row(data["rm_scores"])
        lengths = data["response_mask"].offsets().diff().tolist()
        info = [self._e3rl_uids[uids[i]] for i in known]
        shaped, step_metrics = self.e3rl.observe(
            [p for p, _ in info],
            [raw[i] for i in known],
            [lengths[i] for i in known],
            [r for _, r in info],
        )
        metrics.update(step_metrics)
        deltas = [0.0] * len(keys)
        for j, i in enumerate(known):
            deltas[i] = shaped[j] - raw[i]
        if any(d != 0.0 for d in deltas):
            scores = add_at_last_token(data["rm_scores"], data["response_mask"], deltas)
            tq.kv_batch_put(
                keys=keys,
                partition_id=batch.partition_id,
                fields=TensorDict({"rm_scores": scores}, batch_size=len(keys)),
            )
        for u in set(uids):
            self._e3rl_uids.pop(u, None)
        return super()._compute_advantage(batch, metrics)

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        batch = super().step(metrics, timing_raw)
        metrics.update(self.e3rl.end_step(self._e3rl_entropy))
        return batch
