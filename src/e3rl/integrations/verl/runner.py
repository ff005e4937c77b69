"""The Ray task that hosts the trainer: verl's ``TaskRunnerV1.run`` with e3rl's trainer class.

verl looks its v1 trainer up by ``trainer.v1.trainer_mode`` in a registry filled at import time in
the process that runs the task; that process never imports e3rl, so the runner instantiates
:class:`~e3rl.integrations.verl.trainer.E3rlSyncTrainer` directly. Everything else is verl's.
"""

from __future__ import annotations

from pprint import pprint

import ray
from omegaconf import DictConfig, OmegaConf
from verl.utils.import_utils import load_class_from_fqn
from verl.utils.logging_utils import configure_verl_logging

__all__ = ["E3rlTaskRunner"]


@ray.remote(num_cpus=1)
class E3rlTaskRunner:
    """One per run, on the Ray cluster's driver node: owns the trainer and the agent loops."""

    def __init__(self) -> None:
        self.config = None
        self.trainer = None
        self.agent_loop_manager = None

    def init_agent_loop_manager(self) -> None:
        from verl.trainer.ppo.v1 import AgentLoopManagerTQ

        fqn = self.config.actor_rollout_ref.rollout.get("agent", {}).get("agent_loop_manager_class")
        cls = load_class_from_fqn(fqn, "AgentLoopManager") if fqn else AgentLoopManagerTQ
        self.agent_loop_manager = cls.create(
            config=self.config,
            llm_client=self.trainer.get_llm_client(),
            teacher_client=self.trainer.get_teacher_client(),
            reward_loop_worker_handles=self.trainer.get_reward_handles(),
        )

    def run(self, config: DictConfig) -> None:
        import transfer_queue as tq

        from e3rl.integrations.verl.trainer import E3rlSyncTrainer

        configure_verl_logging()
        config.transfer_queue.enable = True
        pprint(OmegaConf.to_container(config, resolve=True))
        OmegaConf.resolve(config)
        self.config = config
        tq.init(config.transfer_queue)
        succeeded = False
        try:
            self.trainer = E3rlSyncTrainer(config=config)
            self.trainer.init()
            self.init_agent_loop_manager()
            self.trainer.fit(self.agent_loop_manager)
            succeeded = True
        finally:
            try:
                tracking = getattr(self.trainer, "logger", None)
                if tracking is not None:
                    tracking.finish(exit_code=0 if succeeded else 1)
            finally:
                tq.close()
