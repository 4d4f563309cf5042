"""`--help` teaches the config: groups with their options, the keys that shape each
command, `toolkit config keys GROUP`; a misspelled key or option gets a did-you-mean."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from toolkit.cli.main import app
from toolkit.cli.reference import field_docs, leaf_keys
from toolkit.config.schema import ToolkitConfig
from toolkit.config.store import group_options

runner = CliRunner()


def help_text(*command: str) -> str:
    """The help of ``command`` with whitespace collapsed (rich wraps to the terminal)."""
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_serve_help_lists_groups_options_and_most_used_keys():
    text = help_text("serve")
    models = [f"{name}*" if name == "smollm2" else name for name in group_options("model")]
    assert "model " + " | ".join(models) in text and "qwen2 |" in text
    assert "quant auto* | awq | fp8 | gptq | none | q4_1" in text
    assert "recipe cpu-default | cpu-latency | cpu-throughput" in text
    assert "server.port=8000 TCP port." in text
    assert "model.max_model_len=null Context length (prompt + output)" in text
    assert "server.api_keys=[] Keys accepted as" in text  # [..] survives rich markup
    assert "`toolkit config keys GROUP`" in text and "`toolkit config show" in text
    assert " bench " not in text.split("Config groups")[1].split("Most used keys")[0]


@pytest.mark.parametrize("command, expected", [
    ("bench", ["bench chat | random* | shared_prefix", "bench.workload=random",
               "bench.request_rate=null Mean requests per second", "bench.max_concurrency",
               "bench.prompt_len=128", "bench.output_len=64"]),
    ("tune", ["bench.tune.sweep Sweep overrides used when",
              "bench.slo.max_ttft_s=1.0 Most seconds to the first token",
              "bench.tune.min_slo_attainment=0.99"]),
    ("quantize", ["output=DIR Where the quantized checkpoint is written (required).",
                  "quant auto* | awq", "quant.group_size=null Input features per "
                  "quantization group", "quant.num_calibration_samples=16"]),
    ("generate", ["sampling.temperature=0.7 0 means greedy.", "sampling.max_tokens=64"]),
])
def test_every_command_help_names_the_keys_that_shape_it(command, expected):
    text = help_text(command)
    for piece in expected:
        assert piece in text, piece


def test_config_keys_lists_every_key_of_a_group_with_type_default_and_doc():
    result = runner.invoke(app, ["config", "keys", "cache"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "# cache: The paged KV cache."
    assert "cache.page_size: int = 16" in lines
    assert lines[lines.index("cache.page_size: int = 16") + 1] == "    Tokens per KV page."
    assert "cache.num_pages: int | None = null" in lines
    keys = [line.split(":")[0] for line in lines[1:] if line and not line.startswith(" ")]
    assert keys == [f"cache.{name}" for name in ("page_size", "cpu_kv_cache_gb",
                                                 "gpu_memory_utilization", "num_pages",
                                                 "enable_prefix_caching", "dtype")]


def test_config_keys_follows_overrides_and_nested_groups():
    result = runner.invoke(app, ["config", "keys", "server", "server.port=9001"])
    assert "server.port: int = 9001" in result.stdout
    assert "server.chat.tool_parser: str = hermes" in result.stdout  # nested groups walked
    nested = runner.invoke(app, ["config", "keys", "server.chat"])
    assert nested.exit_code == 0 and nested.stdout.startswith("# server.chat: Tool calling")
    bench = runner.invoke(app, ["config", "keys", "bench"])
    assert "bench.workload: str = random" in bench.stdout  # composed from conf/bench.yaml


def test_config_keys_of_an_unknown_group_is_one_line_with_did_you_mean():
    result = runner.invoke(app, ["config", "keys", "sever"])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: unknown group 'sever' (did you mean server?); valid groups:")
    assert "server.chat" in line
    recipe = runner.invoke(app, ["config", "keys", "recipe"])
    assert recipe.exit_code == 2 and "toolkit recipes list" in recipe.stderr


@pytest.mark.parametrize("override, line", [
    ("modle=llama3", "error: unknown key 'modle' (did you mean model?); valid keys: "
                     "attention, bench, cache, device, lora, model, parallel, quant, "),
    ("cache.page_sise=8", "error: unknown key 'cache.page_sise' (did you mean "
                          "cache.page_size?); valid keys under cache:"),
    ("model=smollm", "error: unknown model 'smollm' (did you mean smollm2?); valid choices:"),
])
def test_serve_misspellings_get_a_did_you_mean_in_one_line(override, line):
    result = runner.invoke(app, ["serve", override])
    assert result.exit_code == 2
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(line), error


def test_every_leaf_key_has_a_doc():
    """The help and `config keys` read the field docstrings: none may be missing."""
    assert field_docs()["ServerConfig", "port"] == "TCP port."
    missing = [info.key for info in leaf_keys(ToolkitConfig()) if not info.doc]
    assert not missing, missing
