"""A single-turn agent loop that samples each prompt at the temperature the driver chose.

verl's agent-loop workers are separate Ray actors holding their own copy of the config, so a
temperature changed on the driver never reaches them. The driver therefore writes the temperature
into every prompt of the batch (field :data:`TEMPERATURE_KEY`, set by
:class:`e3rl.integrations.verl.trainer.E3rlSyncTrainer`); this loop puts it into the sampling
parameters of its request. Prompts without the field (validation batches) keep the parameters verl
built (``val_kwargs.temperature``). Registered with verl under the name ``e3rl_single_turn`` through
``actor_rollout_ref.rollout.agent.agent_loop_config_path`` (``agent_loops.yaml`` beside this file),
which is how verl's workers find loops defined outside verl.
"""

from __future__ import annotations

import math
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

__all__ = ["AGENT_NAME", "TEMPERATURE_KEY", "E3rlSingleTurnAgentLoop", "sampling_params_for"]

AGENT_NAME = "e3rl_single_turn"
TEMPERATURE_KEY = "e3rl_temperature"


def sampling_params_for(sampling_params: dict[str, Any], temperature: Any) -> dict[str, Any]:
    """A copy of ``sampling_params`` with the per-sample temperature (None: unchanged)."""
    params = dict(sampling_params)
    if temperature is None:
        return params
    value = float(temperature)  # a 0-d tensor when it comes through verl's TensorDict batch
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{TEMPERATURE_KEY} must be finite and > 0, got {value}")
    params["temperature"] = value
    return params


class E3rlSingleTurnAgentLoop(SingleTurnAgentLoop):
    """verl's single-turn loop with the per-sample temperature applied."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        temperature = kwargs.pop(TEMPERATURE_KEY, None)
        params = sampling_params_for(sampling_params, temperature)
        output = await super().run(params, **kwargs)
        output.extra_fields["sampling_temperature"] = params.get("temperature")
        return output
