"""Property-based fuzzing of the four readers of untrusted bytes (bounded; the long run is scripts/fuzz.py).

For every mutated input (tests/fuzz_targets.py: byte edits biased to headers, gzip for IDX, JSON-level edits
resealed for manifests), the reader either returns a valid result or raises one of the project's typed
errors; any other exception is a bug. Hypothesis drives the mutations' random generator; examples are
derandomized (the same cases on every run) and no example database is written.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_targets import Targets, classify

# Cases per target in the default run: about 10 s in all on this 2-core machine (an ONNX case creates an
# onnxruntime session). The long run (python scripts/fuzz.py --minutes N) does hundreds of thousands.
EXAMPLES = {"idx": 150, "manifest": 80, "onnx": 40, "image": 120}


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
