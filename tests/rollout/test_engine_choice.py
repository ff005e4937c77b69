"""`rollout.engine` and `rollout.vllm.*`: parsing, validation, and the error without vLLM.

Runs in the default suite (no vLLM needed); the vLLM engine itself is tested in test_vllm.py.
"""

import importlib.util

import pytest

from conftest import TINY
from e3rl.config import ConfigError
from e3rl.config_io import load_config


def test_vllm_engine_and_its_keys_parse():
    cfg = load_config(
        None,
        [
            "rollout.engine=vllm",
            "rollout.vllm.kv_cache_gb=0.5",
            "rollout.vllm.gpu_memory_utilization=0.8",
            "rollout.vllm.enforce_eager=false",
            "rollout.vllm.logprobs=trainer",
        ],
    )
    v = cfg.rollout.vllm
    assert cfg.rollout.engine == "vllm"
    assert (v.kv_cache_gb, v.gpu_memory_utilization, v.enforce_eager, v.logprobs) == (
        0.5,
        0.8,
        False,
        "trainer",
    )
    assert load_config(None, []).rollout.engine == "hf"


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.engine=sglang", "rollout.engine='sglang' is invalid"),
        ("rollout.vllm.gpu_memory_utilization=0", "rollout.vllm.gpu_memory_utilization=0"),
        ("rollout.vllm.gpu_memory_utilization=1.5", "in \\(0, 1\\]"),
        ("rollout.vllm.kv_cache_gb=-1", "rollout.vllm.kv_cache_gb=-1"),
        ("rollout.vllm.logprobs=both", "rollout.vllm.logprobs='both' is invalid"),
    ],
)
def test_bad_vllm_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vllm is installed: nothing is missing"
)
def test_vllm_engine_without_vllm_says_how_to_install_it(tmp_path):
    from e3rl.trainer import train

    cfg = load_config(
        None,
        [
            *TINY,
            "rollout.engine=vllm",
            "trainer.total_steps=1",
            "data.val=null",
            f"trainer.output_dir={tmp_path}",
        ],
    )
    with pytest.raises(ImportError, match=r"e3rl\[vllm\]'.*make vllm-venv"):
        train(cfg, quiet=True)
