"""Registers the schema and the recipes with Hydra's ConfigStore, and lists group options."""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from toolkit.config.schema import ToolkitConfig

SCHEMA_NAME = "toolkit_schema"
RECIPE_GROUP = "recipe"


def conf_dir() -> Path:
    """The config tree: conf/ of a checkout, toolkit/conf of an installed wheel."""
    return Path(str(importlib.resources.files("toolkit.conf")))


def recipes_dir() -> Path:
    return Path(str(importlib.resources.files("toolkit.recipes")))


def config_groups() -> list[str]:
    """Group names: the ToolkitConfig fields that hold a dataclass."""
    return [f.name for f in dataclasses.fields(ToolkitConfig)
            if dataclasses.is_dataclass(f.default_factory)]  # type: ignore[arg-type]


def group_options(group: str) -> list[str]:
    """The names a group accepts (`model=NAME`): its YAML files, or the recipes."""
    folder = recipes_dir() if group == RECIPE_GROUP else conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def default_choices(config_name: str = "serve") -> dict[str, str | None]:
    """Group -> the option a primary config (conf/<config_name>.yaml) picks when the
    command line names none, following its defaults list (`serve`, `override bench: x`)."""
    choices: dict[str, str | None] = {}
    for entry in OmegaConf.load(conf_dir() / f"{config_name}.yaml").get("defaults", []):
        if isinstance(entry, str):
            if entry not in (SCHEMA_NAME, "_self_"):
                choices.update(default_choices(entry))
            continue
        for key, value in entry.items():
            choices[key.split()[-1]] = value
    return choices


def register_configs() -> None:
    """Store the schema (writable, so YAML can merge into it; to_object still yields the
    frozen dataclasses) and every recipe as an option of the `recipe` group."""
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=_writable(OmegaConf.structured(ToolkitConfig)))
    for name in group_options(RECIPE_GROUP):
        node = OmegaConf.load(recipes_dir() / f"{name}.yaml")
        store.store(group=RECIPE_GROUP, name=name, node=node, package="_global_")


def _writable(node: DictConfig) -> DictConfig:
    """Frozen dataclasses make read-only nodes, which Hydra cannot merge into."""
    node._set_flag("readonly", None)
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)
        else:
            child._set_flag("readonly", None)
    return node
