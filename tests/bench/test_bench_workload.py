"""Workloads are seeded and shaped by config; sweeps expand; bad bench values fail in one line."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.bench.sweep import plan_sweep
from toolkit.bench.workload import build_workload, load_chat_dataset, sample_lengths
from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError


def bench(*overrides: str):
    return compose_config(list(overrides), "bench").bench


def test_random_workload_is_seeded_and_fixed_lengths_are_exact():
    cfg = bench("bench.num_requests=5", "bench.prompt_len=7", "bench.output_len=9")
    first, again = build_workload(cfg), build_workload(cfg)
    assert first == again
    assert [len(r.prompt.split()) for r in first] == [7] * 5
    assert {r.max_tokens for r in first} == {9}
    assert first != build_workload(bench("bench.num_requests=5", "bench.prompt_len=7",
                                         "bench.output_len=9", "bench.seed=1"))


def test_sampling_seed_gives_request_i_seed_plus_i_and_the_http_body_carries_it():
    from toolkit.bench.http_client import HttpClient

    assert {r.seed for r in build_workload(bench("bench.num_requests=3"))} == {None}
    seeded = build_workload(bench("bench.num_requests=3", "bench.sampling_seed=40"))
    assert [r.seed for r in seeded] == [40, 41, 42]
    client = HttpClient(None, "http://x/v1", "m", 0.8, True)
    path, body = client._body(seeded[1])
    assert path == "/completions" and body["seed"] == 41 and body["temperature"] == 0.8
    assert "seed" not in client._body(build_workload(bench("bench.num_requests=1"))[0])[1]


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_spread_lengths_stay_positive_and_centred(dist):
    lengths = sample_lengths(np.random.default_rng(0), 100, 0.5, dist, 2000)
    assert lengths.min() >= 1 and len(set(lengths.tolist())) > 10
    assert abs(lengths.mean() - 100) < 5
    if dist == "uniform":
        assert 50 <= lengths.min() and lengths.max() <= 150


def test_shared_prefix_requests_share_one_of_the_prefixes():
    cfg = bench("bench=shared_prefix", "bench.num_requests=12", "bench.num_prefixes=2",
                "bench.shared_prefix_len=20", "bench.prompt_len=5")
    prompts = [r.prompt.split() for r in build_workload(cfg)]
    assert all(len(p) == 25 for p in prompts)
    assert len({" ".join(p[:20]) for p in prompts}) == 2


def test_chat_workload_uses_the_shipped_dataset_each_once_first():
    dataset = load_chat_dataset(None)
    assert len(dataset) >= 40
    requests = build_workload(bench("bench=chat", f"bench.num_requests={len(dataset)}"))
    assert all(r.is_chat for r in requests)
    assert sorted(map(repr, (r.messages for r in requests))) == sorted(map(repr, dataset))


def test_chat_dataset_from_a_file(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text('{"prompt": "hi"}\n\n{"messages": [{"role": "user", "content": "yo"}]}\n')
    assert load_chat_dataset(str(path)) == [({"role": "user", "content": "hi"},),
                                            ({"role": "user", "content": "yo"},)]
    with pytest.raises(ConfigError, match="bench.dataset"):
        load_chat_dataset(str(tmp_path / "missing.jsonl"))


def test_a_grid_plan_checks_every_job_of_the_cartesian_product(tmp_path):
    plan = plan_sweep(["scheduler.max_num_seqs=1,4", "bench.request_rate=2,8", "device=cpu",
                       f"hydra.sweep.dir={tmp_path}"])
    assert plan.axes == ["scheduler.max_num_seqs", "bench.request_rate"]
    assert plan.num_jobs == 4 and plan.sweep_dir == tmp_path


@pytest.mark.parametrize("override, message", [
    ("bench.workload=nope", "bench.workload='nope' is not valid; valid choices: random, chat"),
    ("bench=nope", "unknown bench 'nope'; valid choices: chat, random, shared_prefix"),
    ("bench.target=localhost:8000", "bench.target='localhost:8000' is not valid"),
    ("bench.len_dist=zipf", "bench.len_dist='zipf' is not valid; valid choices: uniform"),
    ("bench.num_requests=0", "bench.num_requests=0 must be >= 1"),
    ("bench.request_rate=-1", "bench.request_rate=-1.0 must be > 0"),
    ("bench.duration_s=5", "bench.duration_s needs bench.request_rate or bench.max_concurrency"),
    ("bench.tune.recipe_name=../x", "bench.tune.recipe_name='../x' must be a file name"),
    ("bench.nope=1", "unknown key 'bench.nope'; valid keys under bench:"),
])
def test_bad_bench_values_fail_with_one_line(override, message):
    with pytest.raises(ConfigError) as info:
        compose_config([override], "bench")
    assert message in str(info.value) and "\n" not in str(info.value)
