"""``lora.modules``: a mapping ``{name: path}`` or a list of ``name=path`` strings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.lora.errors import LoraLoadError


def parse_modules(value: Any) -> dict[str, str]:
    """{adapter name: directory} from lora.modules (None: no adapters); a malformed entry
    is a LoraLoadError naming it."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        pairs = [_split_entry(str(entry)) for entry in value]
    else:
        raise LoraLoadError(f"lora.modules={value!r}: expected a mapping name -> path or a "
                            "list of name=path")
    modules: dict[str, str] = {}
    for name, path in pairs:
        check_adapter_name(name)
        if name in modules:
            raise LoraLoadError(f"lora.modules: adapter {name!r} is named twice")
        modules[name] = path
    return modules


def _split_entry(entry: str) -> tuple[str, str]:
    name, sep, path = entry.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise LoraLoadError(f"lora.modules entry {entry!r}: expected name=path")
    return name.strip(), path.strip()


def check_adapter_name(name: str) -> None:
    """A usable adapter name: non-empty, no whitespace, no '#' (the key separator)."""
    if not name or any(c.isspace() for c in name) or "#" in name:
        raise LoraLoadError(f"LoRA adapter name {name!r}: use a non-empty name without "
                            "spaces or '#'")
