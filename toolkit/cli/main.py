"""`toolkit`: serve, generate, quantize, config, models and recipes commands.

Every command takes Hydra overrides as trailing KEY=VALUE arguments
(`toolkit serve model=llama3 server.port=9000`); bad ones exit with code 2 and one line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import signal
import sys
import uuid
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING

import typer
from omegaconf import OmegaConf
from typer.core import TyperCommand

from toolkit.cli.progress import setup_logging
from toolkit.compose import compose_config, did_you_mean
from toolkit.config.errors import ConfigError
from toolkit.config.store import RECIPE_GROUP, group_options, recipes_dir

if TYPE_CHECKING:
    from toolkit.config.schema import ServerConfig
    from toolkit.runtime import Runtime

logger = logging.getLogger("toolkit.serve")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Declarative, config-first LLM serving.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect composed configs.")
models_app = typer.Typer(no_args_is_help=True, help="Model configs and their weights.")
recipes_app = typer.Typer(no_args_is_help=True, help="Deployment recipes.")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(recipes_app, name="recipes")

OVERRIDES = typer.Argument(
    None, show_default=False,
    help="Config overrides: group=option or key=value (the groups and keys are listed "
    "below; every key: `toolkit config keys GROUP`).")


class ReferenceCommand(TyperCommand):
    """A command whose --help ends with the config reference (groups, options, the keys
    that shape it), built only when the help is shown."""

    @property
    def epilog(self) -> str:  # type: ignore[override]
        from toolkit.cli.reference import command_epilog

        try:
            return _escape_markup(command_epilog(self.name or "serve"))
        except Exception as exc:  # noqa: BLE001 - help must show whatever happens
            return f"(the config reference is unavailable: {exc})"

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        """click sets the epilog at construction; this one is computed instead."""


def _escape_markup(text: str) -> str:
    """``text`` safe for typer's rich help (``[a, b]`` is not a style tag)."""
    try:
        from rich.markup import escape
    except ImportError:
        return text
    return escape(text)


def _clean_errors() -> tuple[type[BaseException], ...]:
    """The errors printed as one line (exit code 2): bad config, a model that cannot be
    found or does not fit its config (ModelLoadError, once its module is loaded)."""
    from toolkit.models.source import ModelSourceError

    errors: list[type[BaseException]] = [ConfigError, ModelSourceError]
    quant_base = sys.modules.get("toolkit.quant.base")
    if quant_base is not None:
        errors.append(quant_base.ModelLoadError)
    return tuple(errors)


def fails_cleanly(command: Callable) -> Callable:
    """Turn a config, model-source or model-fit error into one line on stderr and exit
    code 2."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _clean_errors() as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command(cls=ReferenceCommand)
@fails_cleanly
def serve(overrides: list[str] | None = OVERRIDES) -> None:
    """Compose the config, load the model and serve the OpenAI API."""
    cfg = compose_config(overrides or [])
    from toolkit.api.http.shutdown import ShutdownGate
    from toolkit.cli.preflight import preflight
    from toolkit.cli.server import serve_until_signalled
    from toolkit.engine.process_settings import settle_for_serving
    from toolkit.runtime import build_runtime

    setup_logging(cfg.server.log_level)
    preflight(cfg)  # the port, the model and its fit, before anything slow
    runtime = build_runtime(cfg, engine_thread_only=True)
    server_config = served_config(cfg.server, runtime.model_dir)
    runtime.engine.start(on_fatal=lambda: os.kill(os.getpid(), signal.SIGTERM))
    gate = ShutdownGate()
    try:
        app_ = _build_app(runtime, server_config, gate)
        settle_for_serving()
        started = serve_until_signalled(app_, server_config, gate,
                                        lambda url: logger.info(startup_summary(runtime, url)))
    finally:
        runtime.close()
    if not runtime.engine.healthy:
        typer.echo("error: the engine loop died; see the log above", err=True)
        raise typer.Exit(1)
    if not started:
        typer.echo(f"error: the server did not start on {cfg.server.host}:{cfg.server.port} "
                   "(see the log above); if the port was taken meanwhile, pick another "
                   "with server.port=PORT", err=True)
        raise typer.Exit(3)


def served_config(server: ServerConfig, model_dir: pathlib.Path) -> ServerConfig:
    """server.generation_config=auto resolved to the model's directory, whose
    generation_config.json then supplies the request defaults."""
    if server.generation_config != "auto":
        return server
    return dataclasses.replace(server, generation_config=str(model_dir))


def _build_app(runtime: Runtime, server_config: ServerConfig, gate):
    """The API app; a bad server option found while building it (a chat template path,
    the generation config) is a ConfigError. Logs the request defaults in effect."""
    from toolkit.api.app import build_app

    try:
        built = build_app(runtime.engine, server_config, gate)
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    from toolkit.api.openai.sampling import generation_defaults

    defaults = generation_defaults(server_config.generation_config)
    if defaults:
        values = ", ".join(f"{k}={v}" for k, v in defaults.items())
        logger.info("request defaults %s from %s/generation_config.json (a request's own "
                    "values win)", values, server_config.generation_config)
    else:
        logger.info("request defaults: the built-in ones (temperature 1, top_p 1, the rest "
                    "of the context); a request's own values win")
    return built


def startup_summary(runtime: Runtime, base_url: str) -> str:
    """The last start-up line: where to send requests and what answers them."""
    resolved = runtime.resolved
    quant = (runtime.core.runner.model.quant_method.name if runtime.core is not None
             else runtime.engine.quant_name)  # data parallelism: the replicas'
    kernels = (f"{resolved.cpu_kernels} CPU kernels" if resolved.device == "cpu"
               else f"{resolved.device}")
    kv_cache = f"{resolved.num_pages * resolved.page_size:,} tokens"
    if runtime.core is None:  # data parallelism: each replica has its own cache
        kv_cache += " per replica"
    layout = f", {resolved.parallel_layout}" if resolved.parallel_layout else ""
    return (f"ready: {base_url}/v1 serving {runtime.config.model.name} (quant {quant}, "
            f"{resolved.dtype}, {kernels}{layout}, attention {resolved.attention_backend}, "
            f"KV cache {kv_cache}, context {resolved.max_model_len:,}); OpenAPI: "
            f"{base_url}/openapi.json")


@app.command(cls=ReferenceCommand)
@fails_cleanly
def generate(prompt: str = typer.Argument(..., help="The user message."),
             overrides: list[str] | None = OVERRIDES) -> None:
    """Chat-complete one prompt in-process and stream it to stdout (sampling.* keys apply)."""
    from toolkit.resolve import sampling_params
    from toolkit.runtime import build_runtime

    cfg = compose_config(overrides or [])
    if cfg.parallel.data_parallel_size > 1:
        raise ConfigError(f"parallel.data_parallel_size={cfg.parallel.data_parallel_size}: "
                          "toolkit generate runs one engine in-process; replicas are for "
                          "toolkit serve")
    setup_logging("warning")
    runtime = build_runtime(cfg)
    prompt_ids = runtime.tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    runtime.core.add_request(uuid.uuid4().hex, prompt_ids, sampling_params(cfg))
    while runtime.core.has_unfinished:
        for output in runtime.core.step():
            sys.stdout.write(output.new_text)
            sys.stdout.flush()
    sys.stdout.write("\n")
    runtime.close()


@app.command(cls=ReferenceCommand)
@fails_cleanly
def bench(overrides: list[str] | None = OVERRIDES,
          multirun: bool = typer.Option(False, "-m", "--multirun",
                                        help="Sweep every combination of KEY=a,b overrides.")
          ) -> None:
    """Benchmark the in-process engine or any OpenAI URL (bench.target=URL); with -m a
    Hydra multirun (hydra.sweep.dir=DIR, hydra/launcher=joblib, hydra/sweeper=optuna)."""
    from toolkit.bench.cli import bench_command
    from toolkit.cli.progress import request_bars

    setup_logging("warning")
    bench_command(overrides or [], multirun, request_bars(), bench_preflight)


@app.command(cls=ReferenceCommand)
@fails_cleanly
def tune(overrides: list[str] | None = OVERRIDES) -> None:
    """Sweep scheduler knobs (KEY=a,b; or search them with hydra/sweeper=optuna) under
    bench.slo; write the best config as a recipe."""
    from toolkit.bench.cli import tune_command
    from toolkit.cli.progress import request_bars

    setup_logging("warning")
    tune_command(overrides or [], request_bars(), bench_preflight)


def bench_preflight(cfg) -> None:
    """A bench job on the in-process engine: its model is there and fits, checked before
    Hydra starts or any weights load (a URL target needs nothing here)."""
    if cfg.bench.target != "engine":
        return
    from toolkit.cli.preflight import peek_model_dir

    model_dir = peek_model_dir(cfg.model)
    if model_dir is not None:
        from toolkit.resolve import check_model_fit, resolve_device

        check_model_fit(cfg, model_dir, resolve_device(cfg))


@app.command(cls=ReferenceCommand)
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
    """Print the composed, validated config (no model is loaded), then the request
    defaults the server applies and where each comes from."""
    from toolkit.cli.reference import request_defaults_lines
    from toolkit.resolve import resolve_attention, resolve_device

    cfg = compose_config(overrides or [])
    typer.echo(OmegaConf.to_yaml(OmegaConf.structured(cfg)), nl=False)
    device = resolve_device(cfg)
    typer.echo(f"# resolved: device={device} attention={resolve_attention(cfg, device)}")
    typer.echo("\n".join(request_defaults_lines(cfg)))


@config_app.command("keys")
@fails_cleanly
def config_keys(group: str = typer.Argument(..., help="A config group (model, server, "
                                            "cache ...) or a nested one (server.chat)."),
                overrides: list[str] | None = OVERRIDES) -> None:
    """Every key of GROUP with its type, default (as composed with OVERRIDES) and doc."""
    from toolkit.cli.reference import (
        class_doc,
        describe_key,
        group_node,
        key_groups,
        leaf_keys,
    )

    if group == RECIPE_GROUP:
        raise ConfigError("recipe picks a whole deployment and has no keys; see "
                          "`toolkit recipes list` and `toolkit recipes show NAME`")
    cfg = compose_config(overrides or [], "bench" if group.split(".")[0] == "bench"
                         else "serve")
    try:
        node = group_node(cfg, group)
    except KeyError:
        valid = key_groups(cfg)
        raise ConfigError(f"unknown group {group!r}{did_you_mean(group, valid)}; valid "
                          f"groups: {', '.join(valid)}") from None
    typer.echo(f"# {group}: {class_doc(type(node))}")
    typer.echo("\n".join(describe_key(info) for info in leaf_keys(node, f"{group}.")))


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
    from toolkit.waits import model_lookup_wait, waiting

    cfg = compose_config([f"model={name}", *(overrides or [])])
    setup_logging("info")
    with waiting(*model_lookup_wait(cfg)):
        directory = resolve_model_dir(cfg.model.source, cfg.model.path)
    typer.echo(directory)


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

