"""Property-based fuzzing of every reader of a file the tool reads (bounded; the long run is scripts/fuzz.py).

For every mutated input (tests/fuzz_targets.py: byte edits biased to headers, gzip for IDX, JSON-level edits
at random paths and deep scalars, numbers no float holds, deep nesting; resealed where a hash would stop
the reader early), the reader either returns a valid result, used as the tool uses it with no nan or inf
shown, or raises one of the project's typed errors; any other exception is a bug. Hypothesis drives the
mutations' random generator; examples are derandomized (the same cases on every run) and no example
database is written. tests/test_readers.py checks that every reader has a target here.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_targets import Targets, classify

# Cases per target in the default run: about 15 s in all on this 2-core machine (an ONNX case creates an
# onnxruntime session, a self-test case two, a card case reads the checkpoint). The long run (python
# scripts/fuzz.py --per-target 10000) does the rest.
EXAMPLES = {"idx": 150, "manifest": 80, "onnx": 40, "image": 120, "checkpoint": 50, "int8_recipe": 120,
            "int8_search": 80, "int8_report": 120, "bench": 100, "robustness": 100, "selftest_bundle": 30,
            "selftest_report": 120, "card": 25, "tflite": 40}


@pytest.fixture(scope="module")
def targets():
    t = Targets()
    yield t
    t.close()


def _check(targets: Targets, target: str, rnd) -> None:
    kind, data = targets.case(target, rnd)
    outcome, detail = classify(targets, target, kind, data)
    assert outcome != "untyped", f"{target} ({kind}, {len(data)} bytes): {detail}; input: {data[:200]!r}"


@pytest.mark.parametrize("target", list(EXAMPLES))
def test_untrusted_bytes_give_a_result_or_a_typed_error(targets, target):
    @settings(max_examples=EXAMPLES[target], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.randoms(use_true_random=False))
    def prop(rnd):
        _check(targets, target, rnd)

    prop()
