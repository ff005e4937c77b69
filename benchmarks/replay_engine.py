"""A rollout engine that draws nothing: it hands e3rl's loop the completions a TRL run sampled.

For the parity benchmark's replay arms (`trl_parity.py`): TRL's `GRPOTrainer` records, step by
step, the prompts it drew and the completions it trained on (`batches.json` in its run
directory); e3rl's training loop then runs on exactly those batches, so that the two trainers'
parameters can be compared after the same data. Everything but sampling and prompt choice is
e3rl's own: rewards, advantages, loss, optimizer, schedule. The per-token log-probabilities and
entropies the loop needs are one forward of the current policy over the recorded rows (what
e3rl's own engines return: the sampling policy's, at the sampling temperature).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from e3rl.rollout.base import Rollouts, check_request, collated_rollouts
from e3rl.rollout.hf import HFEngine
from e3rl.tensors import response_logits


def record_batch(batches: list[dict], prompt_ids, completion_ids) -> None:
    """Appends one TRL generation call: its rows' prompts grouped as TRL's RepeatSampler puts a
    prompt's generations side by side, and every row's completion."""
    prompts: list[list[int]] = []
    counts: list[int] = []
    for p in prompt_ids:
        p = [int(t) for t in p]
        if prompts and prompts[-1] == p:
            counts[-1] += 1
        else:
            prompts.append(p)
            counts.append(1)
    completions = [[int(t) for t in c] for c in completion_ids]
    batches.append({"prompts": prompts, "counts": counts, "completions": completions})


def l2_norm(tensors) -> float:
    """The L2 norm of several tensors taken as one vector (a model's parameters)."""
    return sum(float((t.float() ** 2).sum()) for t in tensors) ** 0.5


def load_batches(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())


class ReplayEngine:
    """`e3rl.rollout.base.Engine` whose k-th `generate` returns the k-th recorded batch (and
    checks that the loop asked for the recorded prompts, in the recorded order and counts)."""

    decode_path = "replay of a TRL run's completions"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        batches: list[dict],
        snapshots: dict[int, Path] | None = None,
        trace_path: Path | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = HFEngine._eos_ids(model, tokenizer)
        self.batches = batches
        self.calls = 0
        # the recorded run's parameters after step k (k: path), to trace the distance as it grows
        self.snapshots = snapshots or {}
        self.trace_path = trace_path
        self.trace: list[dict] = []
        self.start = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _trace(self, step: int) -> None:
        """Distance of the policy after `step` updates to the recorded run's after as many."""
        if step not in self.snapshots:
            return
        theirs = torch.load(self.snapshots[step], weights_only=True)
        mine = self.model.state_dict()
        apart = l2_norm(mine[k] - theirs[k] for k in theirs)
        moved = l2_norm(theirs[k] - self.start[k] for k in theirs)
        self.trace.append({"step": step, "distance": apart, "their_move": moved})
        if self.trace_path is not None:
            Path(self.trace_path).write_text(json.dumps(self.trace, indent=1))

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], counts: list[int], temperature: float, max_new_tokens: int
    ) -> Rollouts:
        check_request(prompts, counts)
        self._trace(self.calls)  # the policy now has had `calls` updates
        if self.calls >= len(self.batches):
            raise RuntimeError(f"the recording holds {len(self.batches)} batches; asked for more")
        b = self.batches[self.calls]
        if [list(p) for p in prompts] != b["prompts"] or list(counts) != b["counts"]:
            raise RuntimeError(
                f"step {self.calls + 1}: the loop asked for other prompts than TRL's"
            )
        self.calls += 1
        prompt_index = [i for i, c in enumerate(counts) for _ in range(c)]
        responses = b["completions"]
        zeros = [[0.0] * len(r) for r in responses]
        truncated = [
            len(r) >= max_new_tokens and not (r and r[-1] in self.eos_ids) for r in responses
        ]
        r = collated_rollouts(
            prompts,
            prompt_index,
            responses,
            {"logprobs": zeros},
            truncated,
            self.pad_id,
            self.tokenizer,
        )
        width = r.response_mask.shape[1]
        logits = response_logits(self.model, r.input_ids, r.attention_mask, width).float()
        logp = torch.log_softmax(logits / temperature, -1)
        logp_t1 = torch.log_softmax(logits, -1)
        mask = r.response_mask
        r.logprobs = logp.gather(-1, r.input_ids[:, -width:, None]).squeeze(-1) * mask
        r.entropy = -(logp.exp() * logp).sum(-1) * mask
        r.entropy_t1 = -(logp_t1.exp() * logp_t1).sum(-1) * mask
        return r
