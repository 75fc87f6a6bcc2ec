"""The registry: every model builds, maps a batch to [N, 10], and has its documented parameter count."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from mnist_edge.errors import UnknownModelError
from mnist_edge.zoo.networks import build_edge_model, build_net, count_macs, count_params
from mnist_edge.zoo.registry import MODELS, get_spec

# Parameter counts we expect: the seeds' figures where given, our documented reading otherwise.
EXPECTED_PARAMS = {
    "cnn_small": 30_840,
    "cnn_small_1conv": 85_320,
    "mlp": 109_386,
    "cnn": 429_258,
    "bn_cnn": 19_856,  # seed 002 says 19,865; the issue allows 5%
    "lenet5": 61_706,
    "lenet5_mod": 91_756,
    "mlp_wide": 535_818,
    "cnn_dropout": 214_538,
    "edge_cnn": 19_138,  # ours: at most 20,000 (issue 17)
}


def test_every_registered_model_is_tested():
    assert set(EXPECTED_PARAMS) == set(MODELS), "add the new model to EXPECTED_PARAMS"


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_model_builds_and_has_documented_parameter_count(name):
    spec = get_spec(name)
    net = build_net(name)
    params = count_params(net)
    assert params == EXPECTED_PARAMS[name]
    if spec.documented_params is not None:
        assert abs(params - spec.documented_params) <= spec.param_tolerance * spec.documented_params
    edge = build_edge_model(spec, net).eval()
    image = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    logits, probs = edge(image)
    assert logits.shape == probs.shape == (5, 10)
    assert logits.dtype == probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    # the registry stores both counts for `mnist-edge list` without torch; they must be what torch counts
    assert spec.params == params
    assert spec.macs == count_macs(net, spec.input_size) > 0


def test_bn_cnn_feature_maps_follow_the_seed_table():
    net = build_net("bn_cnn")
    sizes = []
    x = torch.zeros(1, 1, 28, 28)
    for layer in net.features:
        x = layer(x)
        if not isinstance(layer, torch.nn.MaxPool2d):
            sizes.append(x.shape[-1])
    assert sizes == [26, 24, 12, 12, 10, 5, 3, 1]  # conv blocks (maxpools give 12 and 5)


def test_macs_of_cnn_small_match_hand_count():
    # conv1 10*26*26*25 + conv2 20*11*11*250 + fc1 500*50 + fc2 50*10
    assert count_macs(build_net("cnn_small")) == 169_000 + 605_000 + 25_000 + 500


def test_lenet_pads_inside_the_model():
    spec = get_spec("lenet5")
    edge = build_edge_model(spec)
    assert edge.prepare(torch.zeros(2, 1, 28, 28)).shape == (2, 1, 32, 32)


def test_unknown_model_names_valid_choices_and_closest_match():
    with pytest.raises(UnknownModelError) as e:
        get_spec("bn_cnnn")
    assert "bn_cnn" in str(e.value) and "Did you mean 'bn_cnn'" in str(e.value)
    assert all(name in str(e.value) for name in MODELS)


def test_list_shows_every_count_without_torch():
    """A runtime-only install (no torch): `mnist-edge list` still gives parameters and MACs of every model."""
    script = """
        import sys
        sys.modules["torch"] = None  # import torch now raises ImportError, as where it is not installed
        from mnist_edge.cli import main
        sys.exit(main(["list", "--json"]))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(MODELS)
    for name, r in rows.items():
        assert (r["params"], r["macs"]) == (MODELS[name].params, MODELS[name].macs) and r["macs"] > 0
    table = subprocess.run([sys.executable, "-c", textwrap.dedent(script).replace('"list", "--json"', '"list"')],
                           capture_output=True, text=True, timeout=120).stdout
    assert "(torch)" not in table and "19,856" in table and "3,652,352" in table


def test_edge_net_downsampling_is_a_named_choice():
    from mnist_edge.zoo.networks import EdgeNet

    pool, stride = EdgeNet(first_down="pool"), EdgeNet(first_down="stride")
    assert count_params(pool) == count_params(stride) == 19_138
    assert count_macs(stride) < count_macs(pool) * 0.8
    with pytest.raises(ValueError, match="'pool' or 'stride'"):
        EdgeNet(first_down="avg")
