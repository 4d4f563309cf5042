"""The grammar bitmask in the sampler: first, exact, and logprobs stay raw."""

from __future__ import annotations

import json

import pytest
import torch

from toolkit.guided.compiler import GuidedSpecError
from toolkit.guided.matchers import GrammarMatchers
from toolkit.protocol import GuidedSpec, SamplingParams
from toolkit.runner.sampler import sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiler(runtime):
    return runtime.core.guided


def test_bitmask_wins_over_logit_bias_and_leaves_logits_alone(compiler, runtime):
    grammar = compiler.compile(GuidedSpec("choice", json.dumps(["yes", "no"]),
                                          param="guided_choice"))
    matchers = GrammarMatchers()
    matchers.add("g", grammar)
    vocab = compiler.vocab_size
    banned = runtime.tokenizer.encode("maybe", add_special_tokens=False)[0]
    logits = torch.randn(3, vocab)
    before = logits.clone()
    mask = matchers.fill(["a", "g", "b"], vocab)
    assert mask is not None and mask.rows == (1,)
    params = [SamplingParams(temperature=1.0, logit_bias=((banned, 100.0),))] * 3
    tokens = sample(logits, params, [None] * 3, grammar=mask)
    assert torch.equal(logits, before)
    assert tokens[0].item() == banned and tokens[2].item() == banned
    first = runtime.tokenizer.decode([tokens[1].item()])
    assert "yes".startswith(first) or "no".startswith(first)
    assert not matchers.accept({"g": [tokens[1].item()]})


def test_compiler_names_the_param_and_caches(compiler):
    with pytest.raises(GuidedSpecError) as caught:
        compiler.compile(GuidedSpec("regex", "(", param="guided_regex"))
    assert caught.value.param == "guided_regex"
    spec = GuidedSpec("json", json.dumps({"type": "integer"}))
    assert compiler.compile(spec) is not None
    assert compiler.cache_size_bytes > 0
    assert compiler.info.vocab_size == compiler.vocab_size
