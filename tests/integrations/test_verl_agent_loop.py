"""The e3rl agent loop, loaded the way verl's workers load it, run against a local engine."""

from __future__ import annotations

import asyncio

import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("verl", reason="verl is not installed: run `make test-verl` (own venv)")

import hydra  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: E402
from verl.utils.import_utils import resolve_config_path  # noqa: E402

from e3rl.integrations.verl.agent_loop import AGENT_NAME, TEMPERATURE_KEY  # noqa: E402
from e3rl.integrations.verl.entry import AGENT_LOOPS_FILE  # noqa: E402


def _run(cfg, model_dir, prompts_and_temps):
    from .hf_token_server import HFTokenServer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    server = HFTokenServer(model, tokenizer, max_new_tokens=8)
    # what AgentLoopWorker.__init__ does with rollout.agent.agent_loop_config_path
    registry = {c.name: c for c in OmegaConf.load(resolve_config_path(str(AGENT_LOOPS_FILE)))}
    assert AGENT_NAME in registry

    async def go():
        outs = []
        for messages, temperature in prompts_and_temps:
            loop = hydra.utils.instantiate(
                config=registry[AGENT_NAME],
                trainer_config=DictConfigWrap(config=cfg),
                server_manager=server,
                tokenizer=tokenizer,
                processor=None,
                hf_model_type="llama",
                dataset_cls=RLHFDataset,
                data_config=DictConfigWrap(cfg.data),
                tools=ToolListWrap([]),
            )
            kwargs = {"raw_prompt": messages}
            if temperature is not None:
                kwargs[TEMPERATURE_KEY] = torch.tensor(temperature)  # as verl's worker passes it
            params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": False}
            outs.append(await loop.run(params, **kwargs))
        return outs

    return asyncio.run(go()), server


def test_per_sample_temperature_reaches_the_engine(verl_config, verl_model_dir):
    model_dir, problems = verl_model_dir
    cfg = verl_config()
    msgs = [[{"role": "user", "content": p.question}] for p in problems["train"][:3]]
    outs, server = _run(cfg, model_dir, [(msgs[0], 0.25), (msgs[1], 1.75), (msgs[2], None)])
    assert [r["temperature"] for r in server.requests] == [0.25, 1.75, 1.0]
    assert [o.extra_fields["sampling_temperature"] for o in outs] == [0.25, 1.75, 1.0]
    tok = AutoTokenizer.from_pretrained(model_dir)
    for out, m in zip(outs, msgs, strict=True):
        assert (
            out.prompt_ids
            == tok(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False))[
                "input_ids"
            ]
        )
        assert 1 <= len(out.response_ids) <= 8 and len(out.response_mask) == len(out.response_ids)


def test_bad_temperature_is_rejected(verl_config, verl_model_dir):
    model_dir, problems = verl_model_dir
    msgs = [{"role": "user", "content": problems["train"][0].question}]
    with pytest.raises(ValueError, match="e3rl_temperature must be finite and > 0"):
        _run(verl_config(), model_dir, [(msgs, 0.0)])
