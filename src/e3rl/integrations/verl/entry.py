"""``python -m e3rl.integrations.verl [hydra overrides]``: verl's PPO entry point with e3rl.

Composes verl's own ``ppo_trainer`` config with the ``e3rl`` section (``config/e3rl_ppo.yaml``),
validates it with verl's checks and e3rl's, and runs verl's ``run_ppo`` with
:class:`~e3rl.integrations.verl.runner.E3rlTaskRunner`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from e3rl.config import ConfigError

__all__ = ["AGENT_LOOPS_FILE", "main", "prepare_config"]

AGENT_LOOPS_FILE = Path(__file__).with_name("agent_loops.yaml")
# absolute: under `python -m`, Hydra would read a relative path as a module with an __init__.py
CONFIG_DIR = str(Path(__file__).with_name("config"))
_VERL_DEFAULT_LOOP = "single_turn_agent"


def prepare_config(config: DictConfig) -> DictConfig:
    """Fill in what depends on the install, then run verl's and e3rl's validation."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from e3rl.integrations.verl.trainer import check_config

    agent = config.actor_rollout_ref.rollout.agent
    with open_dict(config):
        if not agent.get("agent_loop_config_path"):
            agent.agent_loop_config_path = str(AGENT_LOOPS_FILE)
    settings = check_config(config)
    if settings.temperature_control == "entropy" and agent.default_agent_loop == _VERL_DEFAULT_LOOP:
        raise ConfigError(
            "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent is invalid with "
            "e3rl.temperature_control=entropy: verl's loop ignores the per-sample temperature; "
            "use e3rl_single_turn (or a loop that reads the 'e3rl_temperature' field)"
        )
    auto_set_device(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    return config


@hydra.main(config_path=CONFIG_DIR, config_name="e3rl_ppo", version_base=None)
def main(config: DictConfig) -> None:
    from verl.trainer.main_ppo import run_ppo

    from e3rl.integrations.verl.runner import E3rlTaskRunner

    run_ppo(prepare_config(config), task_runner_class=E3rlTaskRunner)
