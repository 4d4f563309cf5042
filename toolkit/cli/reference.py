"""The reference the CLI prints: config groups and their options, keys with their type,
default and doc (the field docstrings of toolkit/config/schema/, read with ``ast``).

``command_epilog`` is the end of ``toolkit serve --help`` (and bench, tune, quantize,
generate): the groups, the keys that shape that command, and where to look next;
``group_keys`` is what ``toolkit config keys GROUP`` lists.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import pathlib
import textwrap
from dataclasses import dataclass

from toolkit.config import schema
from toolkit.config.store import (
    RECIPE_GROUP,
    config_groups,
    default_choices,
    group_options,
)

MOST_USED = {
    "serve": (
        "model.path", "model.dtype", "model.max_model_len", "server.host", "server.port",
        "server.api_keys", "server.generation_config", "server.log_level",
        "scheduler.max_num_seqs", "scheduler.max_num_batched_tokens",
        "cache.cpu_kv_cache_gb", "cache.gpu_memory_utilization", "device.device",
        "device.cpu_kernels", "device.num_threads", "device.deterministic",
    ),
    "generate": (
        "sampling.max_tokens", "sampling.temperature", "sampling.top_p", "sampling.top_k",
        "sampling.seed", "model.path", "model.dtype",
    ),
    "bench": (
        "bench.target", "bench.workload", "bench.num_requests", "bench.duration_s",
        "bench.request_rate", "bench.max_concurrency", "bench.prompt_len", "bench.output_len",
        "bench.dataset", "bench.shared_prefix_len", "bench.num_prefixes", "bench.temperature",
        "bench.output_dir", "scheduler.max_num_seqs",
    ),
    "tune": (
        "bench.tune.sweep", "bench.slo.max_ttft_s", "bench.slo.max_tpot_s",
        "bench.tune.min_slo_attainment", "bench.tune.recipe_name", "bench.tune.install",
        "bench.workload", "bench.num_requests", "bench.request_rate",
    ),
    "quantize": (
        "quant.group_size", "quant.num_calibration_samples", "quant.calibration_seq_len",
        "quant.apply_clip", "model.path", "model.dtype",
    ),
}
"""Per command, the keys its --help documents (every key: `toolkit config keys GROUP`)."""

COMMAND_GROUPS = {"quantize": ("model", "quant", "device")}
"""Groups a command's --help lists; commands not named here list every group (`bench`
only for bench and tune) and the recipes."""

EXTRA_ARGUMENTS = {
    "quantize": (("output=DIR", "Where the quantized checkpoint is written (required)."),),
}
"""Arguments a command takes besides config overrides."""

KEY_COLUMN = 38
"""Width of the key=default column of --help; longer ones show the key alone."""

CONFIG_NAMES = {"bench": "bench", "tune": "bench"}
"""The primary config each command composes (others: serve)."""


@dataclass(frozen=True)
class KeyInfo:
    """One leaf key of the config."""

    key: str
    """Dotted name, as an override writes it (server.port)."""
    type: str
    """The schema's annotation (int, str | None ...)."""
    default: object
    """The composed value (YAML over the schema's default)."""
    doc: str
    """The field's docstring, whitespace collapsed."""


@functools.cache
def field_docs() -> dict[tuple[str, str], str]:
    """(dataclass name, field name) -> the attribute docstring under the field in the
    modules of toolkit/config/schema/."""
    docs = {}
    modules = sorted(pathlib.Path(schema.__file__).parent.glob("*.py"))
    classes = [node for path in modules for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.ClassDef)]
    for cls in classes:
        body = cls.body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[cls.name, node.target.id] = " ".join(after.value.value.split())
    return docs


def class_doc(cls: type) -> str:
    """A config dataclass's docstring, whitespace collapsed."""
    return " ".join((cls.__doc__ or "").split())


def leaf_keys(node: object, prefix: str = "") -> list[KeyInfo]:
    """Every leaf key under a composed config dataclass ``node``, depth first, in the
    schema's order; nested dataclasses (server.chat ...) are walked."""
    docs = field_docs()
    rows = []
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            rows += leaf_keys(value, f"{key}.")
        else:
            rows.append(KeyInfo(key, str(field.type), value,
                                docs.get((type(node).__name__, field.name), "")))
    return rows


def group_node(cfg: schema.ToolkitConfig, group: str) -> object:
    """The dataclass at dotted ``group`` (server, server.chat ...); KeyError naming the
    first part that is not a group."""
    node: object = cfg
    for part in group.split("."):
        value = getattr(node, part, None)
        if not dataclasses.is_dataclass(value):
            raise KeyError(part)
        node = value
    return node


def key_groups(cfg: schema.ToolkitConfig) -> list[str]:
    """Every group `config keys` accepts: the top-level groups and their nested ones."""
    names = []

    def walk(node: object, prefix: str) -> None:
        for field in dataclasses.fields(node):
            value = getattr(node, field.name)
            if dataclasses.is_dataclass(value):
                names.append(f"{prefix}{field.name}")
                walk(value, f"{prefix}{field.name}.")

    walk(cfg, "")
    return names


def format_value(value: object) -> str:
    """A value as an override writes it (null, true, [a, b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def first_sentence(doc: str, width: int = 56) -> str:
    """The first sentence (or clause, before a `;`) of ``doc``, cut to ``width``
    characters at a word: one line beside the key in --help."""
    if not doc:
        return ""
    sentence = doc.split(". ")[0].split("; ")[0].rstrip(".") + "."
    return textwrap.shorten(sentence, width, placeholder=" ...")


def describe_key(info: KeyInfo) -> str:
    """`key: type = default` and the whole doc, wrapped and indented (config keys)."""
    head = f"{info.key}: {info.type} = {format_value(info.default)}"
    body = textwrap.fill(info.doc, 88, initial_indent="    ", subsequent_indent="    ")
    return f"{head}\n{body}" if info.doc else head


def groups_section(command: str) -> list[str]:
    """`  group   a | b* | c` lines: every option, the default starred."""
    wanted = COMMAND_GROUPS.get(command)
    groups = list(wanted) if wanted else [
        g for g in config_groups() if g != "bench" or command in ("bench", "tune")]
    if wanted is None:
        groups.append(RECIPE_GROUP)
    defaults = default_choices(CONFIG_NAMES.get(command, "serve"))
    lines = []
    for group in groups:
        options = [f"{o}*" if o == defaults.get(group) else o for o in group_options(group)]
        lines.append(f"  {group:<13}{' | '.join(options) or '(none)'}")
    return lines


def keys_section(command: str, cfg: schema.ToolkitConfig) -> list[str]:
    """`  key=default   first sentence of its doc` for the command's most used keys."""
    rows = {info.key: info for info in leaf_keys(cfg)}
    lines = [f"  {arg:<{KEY_COLUMN}}{doc}" for arg, doc in EXTRA_ARGUMENTS.get(command, ())]
    for key in MOST_USED.get(command, MOST_USED["serve"]):
        info = rows[key]
        shown = f"{key}={format_value(info.default)}"
        shown = shown if len(shown) < KEY_COLUMN else key
        lines.append(f"  {shown:<{KEY_COLUMN}}{first_sentence(info.doc)}")
    return lines


def command_epilog(command: str) -> str:
    """The reference ending `toolkit COMMAND --help`: groups, most used keys, pointers."""
    from toolkit.compose import compose_config

    cfg = compose_config([], CONFIG_NAMES.get(command, "serve"))
    parts = [
        "Overrides: group=option picks a file of conf/<group>/, key=value sets one key "
        "(later ones win).",
        "Config groups (* = default):\n" + "\n".join(groups_section(command)),
        "Most used keys (shown with their defaults):\n" + "\n".join(keys_section(command, cfg)),
        "More: `toolkit config keys GROUP` lists every key of a group with its type, "
        "default and doc; `toolkit config show [OVERRIDES]` prints the composed config "
        "(no model is loaded).",
    ]
    return "\n\n".join(parts)


BUILTIN_TEXT = {"max_tokens": "the rest of the context (completions: 16, their own default)"}
"""How a built-in default without a plain value is described."""


def request_defaults_lines(cfg: schema.ToolkitConfig) -> list[str]:
    """YAML comment lines for `config show`: each sampling default the server applies to
    a request that leaves it unset, and where it comes from (server.generation_config:
    the model's generation_config.json, or the built-in value, as vLLM). Finds the model
    without converting or downloading it."""
    from toolkit.api.openai.sampling import BUILTIN_DEFAULTS, generation_defaults
    from toolkit.cli.preflight import peek_model_dir
    from toolkit.config.errors import ConfigError

    setting = cfg.server.generation_config
    directory, note = _generation_config_dir(cfg, peek_model_dir)
    try:
        found = generation_defaults(directory) if directory is not None else {}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    lines = [f"# request defaults of the server (server.generation_config={setting}); a "
             "request's own values win, sampling.* above is `toolkit generate` only:"]
    for name, builtin in BUILTIN_DEFAULTS.items():
        if name in found:
            origin = f"{directory}/generation_config.json"
            origin += " max_new_tokens" if name == "max_tokens" else ""
            lines.append(f"#   {name}: {found[name]}  ({origin})")
        else:
            shown = BUILTIN_TEXT.get(name, format_value(builtin))
            lines.append(f"#   {name}: {shown}  (built-in, as vLLM)")
    if directory is not None and not found:
        note = f"{directory}/generation_config.json sets no sampling defaults, or is absent"
    if note:
        lines.append(f"#   ({note})")
    return lines


def _generation_config_dir(cfg: schema.ToolkitConfig, peek) -> tuple[str | None, str]:
    """(the directory whose generation_config.json the server reads, or None; a note
    when that cannot be known yet)."""
    setting = cfg.server.generation_config
    if setting == "none":
        return None, ""
    if setting != "auto":
        return setting, ""
    from toolkit.models.source import ModelSourceError

    try:
        directory = peek(cfg.model)
    except ModelSourceError as exc:
        return None, f"the model is not available: {exc}"
    if directory is None:
        return None, ("the model is not converted or downloaded yet; its "
                      "generation_config.json is read when `toolkit serve` starts")
    return str(directory), ""
