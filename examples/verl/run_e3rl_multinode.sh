#!/usr/bin/env bash
# e3rl on verl: GRPO with the difficulty-aware budget and entropy-steered temperature, on a Ray
# cluster of NNODES machines with GPUS_PER_NODE GPUs each (FSDP actor, vLLM rollout).
#
# 1. On every node, in the same environment (pip install 'e3rl[verl]' plus verl's GPU stack:
#    `pip install "verl[vllm,fsdp]==0.9.1"`):
#      head:    ray start --head --port=6379 --num-gpus=$GPUS_PER_NODE
#      workers: ray start --address=HEAD_IP:6379 --num-gpus=$GPUS_PER_NODE
# 2. On the head node: RAY_ADDRESS=auto bash examples/verl/run_e3rl_multinode.sh [more overrides]
#    (or submit it: ray job submit --address=http://HEAD_IP:8265 -- bash examples/verl/...)
#
# Data: verl's RL parquet format (prompt = chat messages, reward_model.ground_truth, data_source),
# e.g. the authors' ../shared/data/e3/{train,valid}_data.parquet; verl's default reward functions
# score math answers by data_source.
set -euo pipefail

NNODES=${NNODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MODEL=${MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}   # any HF path or local directory
TRAIN=${TRAIN:-$HOME/data/e3/train_data.parquet}
VAL=${VAL:-$HOME/data/e3/valid_data.parquet}

python -m e3rl.integrations.verl \
  data.train_files="$TRAIN" data.val_files="$VAL" \
  data.train_batch_size=128 data.max_prompt_length=1024 data.max_response_length=8192 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.actor.ppo_mini_batch_size=32 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.policy_loss.loss_mode=e3rl_ppo \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
  algorithm.adv_estimator=e3rl_grpo \
  e3rl.budget.allocator=rank e3rl.budget.n_low=4 e3rl.budget.n_high=12 e3rl.budget.n_update=2 \
  e3rl.temperature_control=entropy \
  e3rl.temperature.anneal=true e3rl.temperature.anneal_ratio=0.4 e3rl.temperature.anneal_factor=0.9 \
  e3rl.length_bias.mu=1e-3 e3rl.length_bias.threshold=0.1 \
  trainer.nnodes="$NNODES" trainer.n_gpus_per_node="$GPUS_PER_NODE" \
  trainer.total_epochs=3 trainer.save_freq=20 trainer.test_freq=20 \
  trainer.project_name=e3rl trainer.experiment_name=rank-entropy-lb \
  trainer.logger='["console","tensorboard"]' \
  "$@"
