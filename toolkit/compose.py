"""The only place configs are composed: overrides -> a validated ToolkitConfig.

Overrides are checked against the schema and the group folders before Hydra runs, so a
typo fails with one line naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toolkit.config.errors import ConfigError
from toolkit.config.schema import ToolkitConfig
from toolkit.config.store import (
    RECIPE_GROUP,
    conf_dir,
    config_groups,
    group_options,
    register_configs,
)
from toolkit.resolve import validate

RENAMED_KEYS = {
    "cache.block_size": "cache.page_size",
    "cache.num_blocks": "cache.num_pages",
    "server.disable_log_requests": "server.enable_log_requests (request logging is now off "
                                   "by default)",
}
"""Keys that were renamed (one name per knob, from YAML to constructor) -> the new key."""


def compose_config(overrides: list[str], config_name: str = "serve") -> ToolkitConfig:
    """Compose conf/<config_name>.yaml with `overrides`, validate, return frozen dataclasses."""
    check_overrides(overrides)
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            composed = compose(config_name=config_name, overrides=overrides)
        cfg = OmegaConf.to_object(composed)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    validate(cfg)
    return cfg


def check_overrides(overrides: list[str]) -> None:
    """Reject unknown group options and unknown keys, listing what is valid."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(_one_line(exc)) from None
    groups = [*config_groups(), RECIPE_GROUP]
    for override in parsed:
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(f"{override.input_line}: sweeps run under `toolkit bench -m`")
        if key in groups and not override.is_delete():
            _check_choice(key, override.value())
        else:
            _check_key(key)


def _check_choice(group: str, value: object) -> None:
    options = group_options(group)
    if value not in options:
        hint = did_you_mean(str(value), options)
        raise ConfigError(
            f"unknown {group} {value!r}{hint}; valid choices: {', '.join(options)}")


def _check_key(key: str) -> None:
    if key in RENAMED_KEYS:
        raise ConfigError(f"{key} was renamed: use {RENAMED_KEYS[key]}")
    node: type = ToolkitConfig
    seen: list[str] = []
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            valid = sorted([*fields, RECIPE_GROUP] if not seen else fields)
            where = f" under {'.'.join(seen)}" if seen else ""
            hint = did_you_mean(part, valid, before=seen, after=parts[depth + 1:])
            raise ConfigError(
                f"unknown key {key!r}{hint}; valid keys{where}: {', '.join(valid)}")
        seen.append(part)
        factory = fields[part].default_factory
        node = factory if dataclasses.is_dataclass(factory) else None  # type: ignore[assignment]
        if node is None:
            if depth != len(parts) - 1:
                raise ConfigError(f"unknown key {key!r}: {'.'.join(seen)} is a value, not a group")
            return


def did_you_mean(word: str, candidates: Sequence[str], before: Sequence[str] = (),
                 after: Sequence[str] = ()) -> str:
    """`` (did you mean X?)`` for the candidate closest to ``word`` (difflib; among equally
    close ones, one that ``word`` begins: ``smollm`` -> ``smollm2``, not ``smolvlm``), else
    "". In a dotted key the suggestion keeps the parts ``before`` and ``after`` the
    misspelled one: ``cache.page_sise`` -> ``cache.page_size``, ``cahce.page_size`` ->
    ``cache.page_size``."""
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    if not close:
        return ""
    ratio = difflib.SequenceMatcher(None, word, close[0]).ratio()
    ties = [c for c in close if difflib.SequenceMatcher(None, word, c).ratio() == ratio]
    best = next((c for c in ties if c.startswith(word)), close[0])
    return f" (did you mean {'.'.join([*before, best, *after])}?)"


def _one_line(exc: BaseException) -> str:
    """Hydra's message and its cause, flattened to one line."""
    parts = [str(exc).strip().splitlines()[0]]
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        parts.append(str(cause).strip().splitlines()[0])
    return ": ".join(parts)
