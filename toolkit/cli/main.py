"""`toolkit`: serve, generate, quantize, config, models and recipes commands.

Every command takes Hydra overrides as trailing KEY=VALUE arguments
(`toolkit serve model=llama3 server.port=9000`); bad ones exit with code 2 and one line.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import sys
import uuid
from collections.abc import Callable
from functools import wraps

import typer
from omegaconf import OmegaConf

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.config.store import RECIPE_GROUP, group_options, recipes_dir

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Declarative, config-first LLM serving.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect composed configs.")
models_app = typer.Typer(no_args_is_help=True, help="Model configs and their weights.")
recipes_app = typer.Typer(no_args_is_help=True, help="Deployment recipes.")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(recipes_app, name="recipes")

OVERRIDES = typer.Argument(None, help="Hydra overrides: group=option or key=value.",
                           show_default=False)


def fails_cleanly(command: Callable) -> Callable:
    """Turn a config or model-source error into one line on stderr and exit code 2."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        from toolkit.models.source import ModelSourceError

        try:
            return command(*args, **kwargs)
        except (ConfigError, ModelSourceError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@fails_cleanly
def serve(overrides: list[str] | None = OVERRIDES) -> None:
    """Compose the config, load the model and serve the OpenAI API."""
    cfg = compose_config(overrides or [])
    from toolkit.api.app import build_app
    from toolkit.api.http.shutdown import ShutdownGate
    from toolkit.cli.server import serve_until_signalled
    from toolkit.runtime import build_runtime

    _setup_logging(cfg.server.log_level)
    runtime = build_runtime(cfg, engine_thread_only=True)
    runtime.engine.start(on_fatal=lambda: os.kill(os.getpid(), signal.SIGTERM))
    gate = ShutdownGate()
    try:
        started = serve_until_signalled(build_app(runtime.engine, cfg.server, gate),
                                        cfg.server, gate)
    finally:
        runtime.engine.shutdown()
    if not runtime.engine.healthy:
        typer.echo("error: the engine loop died; see the log above", err=True)
        raise typer.Exit(1)
    if not started:
        raise typer.Exit(3)


@app.command()
@fails_cleanly
def generate(prompt: str = typer.Argument(..., help="The user message."),
             overrides: list[str] | None = OVERRIDES) -> None:
    """Chat-complete one prompt in-process and stream it to stdout (sampling.* keys apply)."""
    from toolkit.resolve import sampling_params
    from toolkit.runtime import build_runtime

    cfg = compose_config(overrides or [])
    _setup_logging("warning")
    runtime = build_runtime(cfg)
    prompt_ids = runtime.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    runtime.core.add_request(uuid.uuid4().hex, prompt_ids, sampling_params(cfg))
    while runtime.core.has_unfinished:
        for output in runtime.core.step():
            sys.stdout.write(output.new_text)
            sys.stdout.flush()
    sys.stdout.write("\n")


@app.command()
@fails_cleanly
def bench(overrides: list[str] | None = OVERRIDES,
          multirun: bool = typer.Option(False, "-m", "--multirun",
                                        help="Sweep every combination of KEY=a,b overrides.")
          ) -> None:
    """Benchmark the in-process engine or any OpenAI URL (bench.target=URL)."""
    from toolkit.bench.cli import bench_command

    bench_command(overrides or [], multirun)


@app.command()
@fails_cleanly
def tune(overrides: list[str] | None = OVERRIDES) -> None:
    """Sweep scheduler knobs (KEY=a,b) under bench.slo; write the best config as a recipe."""
    from toolkit.bench.cli import tune_command

    tune_command(overrides or [])


@app.command()
@fails_cleanly
def quantize(overrides: list[str] | None = OVERRIDES) -> None:
    """Quantize the model into output=DIR (quant=awq: AutoAWQ's GEMM layout, quant.* knobs)."""
    from toolkit.models.loader import ModelLoadError
    from toolkit.quantize import QuantizeError, quantize_from_config

    outputs = [o for o in overrides or [] if o.startswith("output=")]
    if not outputs or not outputs[-1].removeprefix("output="):
        raise ConfigError("toolkit quantize needs output=DIR (where the checkpoint goes)")
    cfg = compose_config([o for o in overrides or [] if not o.startswith("output=")])
    out_dir = pathlib.Path(outputs[-1].removeprefix("output=")).expanduser()
    try:
        report = quantize_from_config(cfg, out_dir)
    except (QuantizeError, ModelLoadError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {report.out_dir} ({report.num_layers} layers, "
               f"{report.num_calibration_tokens} calibration tokens, {report.seconds:.0f} s)")


@config_app.command("show")
@fails_cleanly
def config_show(overrides: list[str] | None = OVERRIDES) -> None:
    """Print the composed, validated config (no model is loaded)."""
    from toolkit.resolve import resolve_attention, resolve_device

    cfg = compose_config(overrides or [])
    typer.echo(OmegaConf.to_yaml(OmegaConf.structured(cfg)), nl=False)
    device = resolve_device(cfg)
    typer.echo(f"# resolved: device={device} attention={resolve_attention(cfg, device)}")


@config_app.command("validate")
@fails_cleanly
def config_validate(overrides: list[str] | None = OVERRIDES) -> None:
    """Compose and validate; exit 0 when the config is good."""
    compose_config(overrides or [])
    typer.echo("ok")


@models_app.command("list")
@fails_cleanly
def models_list() -> None:
    """Every model config with its source."""
    for name in group_options("model"):
        model = compose_config([f"model={name}"]).model
        typer.echo(f"{name:<12} {model.path or model.source}")


@models_app.command("pull")
@fails_cleanly
def models_pull(name: str = typer.Argument(..., help="A model config name (see `models list`)."),
                overrides: list[str] | None = OVERRIDES) -> None:
    """Fetch or convert a model's weights into the local cache; print the directory."""
    from toolkit.models.source import resolve_model_dir

    model = compose_config([f"model={name}", *(overrides or [])]).model
    typer.echo(resolve_model_dir(model.source, model.path))


@recipes_app.command("list")
def recipes_list() -> None:
    """Every recipe with the first line of its header."""
    for name in group_options(RECIPE_GROUP):
        typer.echo(f"{name:<28} {_recipe_purpose(name)}")


@recipes_app.command("show")
@fails_cleanly
def recipes_show(name: str = typer.Argument(..., help="A recipe name (see `recipes list`)."),
                 overrides: list[str] | None = OVERRIDES) -> None:
    """Print a recipe's header and the config it composes to."""
    cfg = compose_config([f"recipe={name}", *(overrides or [])])
    typer.echo((recipes_dir() / f"{name}.yaml").read_text(), nl=False)
    typer.echo("# composed:")
    typer.echo(OmegaConf.to_yaml(OmegaConf.structured(cfg)), nl=False)


def _recipe_purpose(name: str) -> str:
    """The first header line after the `# @package` directive."""
    for line in (recipes_dir() / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#") and "@package" not in line:
            return line.lstrip("# ").strip()
    return ""


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper() if level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
