"""Grammar compiles run in killable worker processes under a time limit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from toolkit.guided.compiler import GuidedCompiler, GuidedSpecError
from toolkit.protocol import GuidedSpec

pytestmark = pytest.mark.slow

LIMIT_S = 0.5
PATHOLOGICAL = r"(.{0,1000}x){0,8}"
"""Its automaton blows up: compiling it takes seconds to minutes (12 s on a 2-core box)."""


def regex(pattern: str) -> GuidedSpec:
    return GuidedSpec("regex", pattern, param="guided_regex")


@pytest.fixture(scope="module")
def strict(runtime):
    """A compiler over the model's tokenizer with a small time limit."""
    guided = runtime.core.guided
    compiler = GuidedCompiler(runtime.tokenizer.hf, guided.vocab_size,
                              tuple(guided.info.stop_token_ids), max_threads=1,
                              compile_timeout_s=LIMIT_S, max_compile_workers=2)
    compiler.compile(regex(r"\d"))  # starts a worker: its start-up is not timed
    yield compiler
    compiler.close()


def _timed(compiler: GuidedCompiler, spec: GuidedSpec):
    start = time.perf_counter()
    try:
        return compiler.compile(spec), time.perf_counter() - start
    except GuidedSpecError as exc:
        return exc, time.perf_counter() - start


def test_pathological_regex_is_refused_while_others_compile(strict):
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_timed, strict, regex(PATHOLOGICAL))
        time.sleep(0.05)
        fast = pool.submit(_timed, strict, regex(r"[a-z]{2}-\d{3}"))
        (grammar, _), (error, slow_s) = fast.result(), slow.result()
    assert not isinstance(grammar, Exception)
    assert isinstance(error, GuidedSpecError) and error.param == "guided_regex"
    assert f"within {LIMIT_S:g} s" in str(error)
    assert LIMIT_S <= slow_s < LIMIT_S + 5
    again, _ = _timed(strict, regex(r"(yes|no)"))  # the killed worker was replaced
    assert not isinstance(again, Exception)


def test_a_bad_grammar_keeps_its_worker(strict):
    with pytest.raises(GuidedSpecError) as caught:
        strict.compile(GuidedSpec("grammar", 'root ::= "a" |', param="guided_grammar"))
    assert caught.value.param == "guided_grammar" and "did not compile" not in str(caught.value)
    assert strict.compile(GuidedSpec("grammar", 'root ::= "a" | "b"',
                                     param="guided_grammar")) is not None
