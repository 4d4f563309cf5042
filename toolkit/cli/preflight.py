"""Checks `toolkit serve` runs before anything slow (GGUF conversion, the kernel build,
the weights): the port can be bound, the model is there, and the quantization, context
length and KV cache fit it. Each failure is one line naming the key to change."""

from __future__ import annotations

import errno
import pathlib
import socket

from toolkit.config.errors import ConfigError
from toolkit.config.schema import ModelConfig, ToolkitConfig


def preflight(cfg: ToolkitConfig) -> None:
    """Port, then model presence, then the model's fit (where its directory already
    exists; a GGUF not yet converted is checked by build_runtime before the kernels)."""
    check_port(cfg.server.host, cfg.server.port)
    model_dir = peek_model_dir(cfg.model)
    if model_dir is not None:
        from toolkit.resolve import check_model_fit, resolve_device

        check_model_fit(cfg, model_dir, resolve_device(cfg))


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, as uvicorn will (SO_REUSEADDR), and let it go; a
    ConfigError naming server.port / server.host when that fails. Port 0 (any free port)
    always binds."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"server.host={host}: cannot be resolved ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(_bind_problem(host, port, exc)) from None


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    """One line: what is wrong with host:port and the key that fixes it."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"server.port={port}: {where} is already in use (another server?); "
                f"stop it or pick a free port, e.g. server.port={free_port_near(host, port)}")
    if exc.errno == errno.EACCES:
        return (f"server.port={port}: binding {where} needs privileges; use a port above "
                "1023, e.g. server.port=8000")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"server.host={host}: not an address of this machine; use 127.0.0.1 "
                "(loopback) or 0.0.0.0 (every interface)")
    return f"server.host={host} server.port={port}: cannot bind {where} ({exc.strerror})"


def free_port_near(host: str, port: int, tries: int = 20) -> int:
    """The first port after ``port`` that binds on ``host`` (for the hint), else 0."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return 0


def peek_model_dir(model: ModelConfig) -> pathlib.Path | None:
    """The model's directory when it is already on this machine, found without
    converting or downloading anything; None when finding it needs one of those (a GGUF
    not yet converted, a Hugging Face repo not in the local cache). A model that cannot be
    there (a model.path or local source that is not a model directory, a pkg: package
    that is not installed, an unreadable or unsupported .gguf file) raises
    ModelSourceError. A ``model.path=file.gguf`` gets its small metadata directory here
    (gguf_model.gguf_model_dir: config and tokenizer, no weights; seconds, then cached)."""
    from toolkit.models.source import (
        HF_PREFIX,
        PKG_PREFIX,
        cache_root,
        packaged_gguf_path,
        resolve_model_dir,
    )

    if model.path or not model.source.startswith((PKG_PREFIX, HF_PREFIX)):
        return resolve_model_dir(model.source, model.path)
    if model.source.startswith(PKG_PREFIX):
        converted = cache_root() / "models" / packaged_gguf_path(model.source).stem
        return converted if (converted / "config.json").is_file() else None
    return _hf_cached_dir(model.source.removeprefix(HF_PREFIX))


def _hf_cached_dir(repo_id: str) -> pathlib.Path | None:
    """The repo's snapshot in the local Hugging Face cache, if it has config.json."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return pathlib.Path(found).parent if isinstance(found, str) else None
