"""Training: a short run learns, runs are deterministic, checkpoints round-trip and are weights-only.

train() takes things: the zoo's networks reach it resolved by zoo_training (as the CLI resolves them), and
networks of the tests' own go to it as they are, with nothing registered.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mnist_edge.contract import Contract
from mnist_edge.data.dataset import Digits, Split, load_digits
from mnist_edge.errors import CheckpointError, DataError, DeviceError, UsageError
from mnist_edge.training.augment import seed002
from mnist_edge.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from mnist_edge.training.loop import TrainOptions, resolve_device, train
from mnist_edge.zoo.registry import Recipe, get_spec
from mnist_edge.zoo.training import make_recipe, zoo_training


@pytest.fixture(scope="module")
def digits(mnist_dir):
    return load_digits(mnist_dir)


def zoo_train(name, data, recipe="seed", *, epochs=None, batch_size=None, lr=None, **options):
    """A zoo model trained as `mnist-edge train --model NAME` trains it (options: TrainOptions fields)."""
    job = zoo_training(get_spec(name), recipe, epochs=epochs, batch_size=batch_size, lr=lr)
    options = {"recipe_name": job.recipe_name, "test_each_epoch": job.test_each_epoch, **options}
    return train(job.build_net, job.recipe, data, name=job.name, contract=job.contract, net_args=job.net_args,
                 options=TrainOptions(**options))


class Tiny(torch.nn.Module):
    """A network the package does not define: one conv, batch norm, one linear layer."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(1, width, 3, stride=2), torch.nn.BatchNorm2d(width)
        self.fc = torch.nn.Linear(width * 13 * 13, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


TINY_RECIPE = Recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=2)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("train") / "checkpoint.pt"
    return zoo_train("mlp", digits, epochs=1, limit_train=3000, seed=1, out=out)


def test_one_short_epoch_lifts_accuracy_far_above_chance(short_run):
    assert short_run.test_accuracy > 80.0  # chance is 10%
    assert len(short_run.history) == 1 and short_run.selected == "final"
    assert short_run.history[0]["test_acc"] == pytest.approx(short_run.test_accuracy)


def test_checkpoint_round_trip_gives_identical_outputs(short_run):
    net, ckpt = load_checkpoint(short_run.checkpoint)
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(net(x), short_run.net(x))
    assert ckpt["model"] == "mlp" and ckpt["recipe"]["epochs"] == 1
    assert len(ckpt["data_sha256"]) == 64 and ckpt["history"] == short_run.history
    assert ckpt["metrics"]["test_accuracy"] == short_run.test_accuracy
    torch.load(short_run.checkpoint, weights_only=True)  # plain weights-only load works
    assert short_run.checkpoint.with_name("training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_training_is_deterministic_for_a_seed(digits):
    a = zoo_train("bn_cnn", digits, epochs=1, limit_train=512, seed=3, plot=False, test_each_epoch=False)
    b = zoo_train("bn_cnn", digits, epochs=1, limit_train=512, seed=3, plot=False, test_each_epoch=False)
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_a_network_of_ones_own_trains_in_place_and_its_checkpoint_names_its_class(digits, tmp_path):
    torch.manual_seed(0)
    net, lines = Tiny(width=4), []
    start = {k: v.clone() for k, v in net.state_dict().items()}
    twin = Tiny(width=4)
    twin.load_state_dict(start)
    opts = TrainOptions(limit_train=512, seed=5, out=tmp_path / "c.pt", plot=False, test_each_epoch=False,
                        progress=lines.append)
    r = train(net, TINY_RECIPE, digits, name="tiny", contract=Contract(), net_args={"width": 4}, options=opts)
    assert r.net is net and not net.training  # no weight average: the module handed over, trained in place
    assert not torch.equal(net.state_dict()["fc.weight"], start["fc.weight"])
    ckpt = read_checkpoint(tmp_path / "c.pt")
    assert (ckpt["model"], ckpt["net"], ckpt["kwargs"]) == ("tiny", "Tiny", {"width": 4})
    assert ckpt["metrics"]["recipe_name"] is None and ckpt["metrics"]["train_images"] == 512
    assert ckpt["recipe"] == TINY_RECIPE.to_dict()
    assert [line.split(":")[0] for line in lines if "epoch" in line] == ["tiny epoch 1/2", "tiny epoch 2/2"]
    again = train(twin, TINY_RECIPE, digits, name="tiny", contract=Contract(),
                  options=dataclasses.replace(opts, out=None, progress=None))
    for k, v in net.state_dict().items():  # the same initial weights and seed: the same model
        assert torch.equal(v, again.net.state_dict()[k]), k


def test_a_callable_is_built_under_the_training_seed(digits):
    runs = [train(lambda: Tiny(width=2), TINY_RECIPE, digits, name="tiny", contract=Contract(),
                  options=TrainOptions(limit_train=256, seed=7, plot=False, test_each_epoch=False))
            for _ in range(2)]
    for k, v in runs[0].net.state_dict().items():
        assert torch.equal(v, runs[1].net.state_dict()[k]), k


def test_the_contract_prepares_the_pixels_as_the_exported_graph_does(digits):
    seen = []
    net = Tiny()
    net.conv.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    data = Digits(Split(digits.train.images[:64], digits.train.labels[:64]), digits.test.head(64))
    train(net, dataclasses.replace(TINY_RECIPE, batch_size=64, epochs=1), data, name="tiny",
          contract=Contract(mean=0.5, std=0.25), options=TrainOptions(plot=False, test_each_epoch=False))
    pixels = torch.from_numpy(np.sort(digits.train.images[:64].reshape(-1)).astype(np.float32))
    got = torch.sort(seen[0].reshape(-1)).values  # the one training batch, in the order the seed drew it
    torch.testing.assert_close(got, (pixels / 255 - 0.5) / 0.25)


def test_a_contract_of_three_channels_puts_the_grey_digit_into_each():
    from mnist_edge.zoo.networks import EdgeModel

    x = torch.rand(2, 1, 28, 28)
    prepared = EdgeModel.of(Tiny(), Contract(channels=3, mean=0.5, std=0.25)).prepare(x)
    assert prepared.shape == (2, 3, 28, 28)
    assert all(torch.equal(prepared[:, c], (x[:, 0] - 0.5) / 0.25) for c in range(3))


def test_what_train_cannot_use_is_a_one_line_error_before_any_work(digits):
    kw = dict(name="tiny", contract=Contract(), options=TrainOptions(plot=False))
    with pytest.raises(UsageError, match="unknown augment 'warp'; valid: seed002, edge"):
        train(Tiny(), dataclasses.replace(TINY_RECIPE, augment="warp"), digits, **kw)
    with pytest.raises(UsageError, match="callable building one, got str"):
        train(lambda: "net", TINY_RECIPE, digits, **kw)
    with pytest.raises(DataError, match="has no test split"):
        train(Tiny(), TINY_RECIPE, Digits(digits.train, None), **kw)


@pytest.mark.parametrize("kw, message", [
    ({"seed": -1}, "--seed must be an integer from 0 to 2\\*\\*63-1, got -1"),
    ({"threads": 0}, "--threads must be a positive integer, got 0"),
    ({"limit_train": True}, "--limit-train must be a positive integer, got True"),
    ({"progress": True}, "progress must be a callable taking a message, or None; got True"),
])
def test_bad_options_are_usage_errors_when_made(kw, message):
    with pytest.raises(UsageError, match=message):
        TrainOptions(**kw)


def test_the_checkpoint_names_mnist_by_the_hash_of_its_files_and_other_digits_by_their_own(digits):
    from mnist_edge.data.mnist import DATASET_SHA256
    from mnist_edge.training.checkpoint import digits_sha256

    assert digits_sha256(digits) == DATASET_SHA256  # what checkpoints have always recorded for MNIST
    flipped = digits.train.images.copy()
    flipped[0, 0, 0] ^= 1
    assert digits_sha256(Digits(Split(flipped, digits.train.labels), digits.test)) != DATASET_SHA256
    many = Digits(digits.train, Split(digits.test.images, digits.test.labels + 300))  # labels beyond a byte
    assert len(digits_sha256(many)) == 64 and digits_sha256(many) != DATASET_SHA256


def test_validation_selection_uses_the_validation_split(digits):
    r = zoo_train("cnn_dropout", digits, epochs=2, limit_train=1000, seed=0, plot=False, test_each_epoch=False)
    best = min(r.history, key=lambda h: h["val_loss"])
    assert r.selected == f"val_loss@{best['epoch']}"
    assert all("test_acc" not in h for h in r.history)  # scored once, at the end: r.test_accuracy
    assert 0 < r.test_accuracy <= 100


def test_non_weights_only_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "mnist-edge-checkpoint/1", "obj": UsageError("x")}, bad)
    with pytest.raises(CheckpointError, match="not weights-only"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(tmp_path / "junk.pt")


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, short_run):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(short_run.checkpoint.read_bytes())
    before = path.read_bytes()

    def interrupted_save(obj, f, *a, **k):
        (f if hasattr(f, "write") else open(f, "wb")).write(b"partial")  # save_checkpoint serializes in memory
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model="mlp", state_dict=short_run.net.state_dict(), recipe={}, history=[],
                        data_sha256="0" * 64, metrics={})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_seed002_augmentation_is_batched_deterministic_and_in_range():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 4:24, 12:16] = 1.0  # a vertical bar
    a = seed002(x, torch.Generator().manual_seed(0))
    b = seed002(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)  # rotated
    # a rotation by at most 15 degrees keeps most of the ink
    assert (a.sum((1, 2, 3)) / x.sum((1, 2, 3))).min() > 0.8


def test_edge_augmentation_warps_exactly_and_restrokes_like_the_robustness_suite():
    from mnist_edge.training.augment import _warp, cross_morph, edge
    from mnist_edge.evaluate.robustness import dilate, erode

    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 10, 5] = 1.0
    moved = _warp(dot, torch.zeros(1), torch.ones(1), torch.tensor([[2.0, -3.0]]))  # 2 px right, 3 px up
    assert (moved[0, 0] > 0.99).nonzero().tolist() == [[7, 7]]
    digits = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    for ours, suite, dil in ((cross_morph, dilate, True), (cross_morph, erode, False)):
        got = (ours(digits.float(), dilate=dil)).to(torch.uint8).numpy()
        assert (got == suite(digits.numpy())).all()  # the same 3x3 cross as the suite's thin/thick
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 4:24, 12:16] = 1.0
    a, b = edge(x, torch.Generator().manual_seed(0)), edge(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)


def test_edge_mild_warps_less_than_edge_and_restrokes_the_same(monkeypatch):
    import math

    from mnist_edge.training import augment

    seen = {}
    real = augment._warp

    def spy(x, angle, scale, shift):
        seen.update(degrees=angle.abs().max().item() * 180 / math.pi, scale=(scale.min().item(), scale.max().item()))
        return real(x, angle, scale, shift)

    monkeypatch.setattr(augment, "_warp", spy)
    x = torch.rand(2000, 1, 28, 28)
    augment.edge(x, torch.Generator().manual_seed(0))
    assert 14.5 < seen["degrees"] <= 15.0 and 0.85 <= seen["scale"][0] < 0.86 and 1.14 < seen["scale"][1] <= 1.15
    augment.AUGMENTATIONS["edge_mild"](x, torch.Generator().manual_seed(0))
    assert 9.5 < seen["degrees"] <= 10.0 and 0.9 <= seen["scale"][0] < 0.91 and 1.09 < seen["scale"][1] <= 1.1


@pytest.mark.parametrize("images", [256, 1024, 1280])  # 1, 4 and 5 steps of batch 256: a warm-up of <= 1 step
def test_a_one_cycle_run_of_a_few_steps_trains(digits, images):
    r = zoo_train("bn_cnn", digits, "fast", epochs=1, limit_train=images, seed=0, plot=False, test_each_epoch=False)
    assert len(r.history) == 1 and np.isfinite(r.history[0]["train_loss"])


def test_recipe_overrides_and_bad_values():
    spec = get_spec("bn_cnn")
    r = make_recipe(spec, epochs=3, batch_size=None, lr=0.5)
    assert (r.epochs, r.batch_size, r.lr, r.momentum) == (3, 128, 0.5, 0.9)
    with pytest.raises(UsageError, match="--batch-size"):
        make_recipe(spec, batch_size=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for an absent CUDA GPU")
def test_cuda_request_without_a_gpu_is_an_error_not_a_cpu_run():
    with pytest.raises(DeviceError, match="no CUDA"):
        resolve_device("cuda")
    with pytest.raises(UsageError, match="valid: cpu, cuda"):
        resolve_device("tpu")


def test_cli_unknown_model_is_one_line_with_closest_match():
    p = subprocess.run([sys.executable, "-m", "mnist_edge", "train", "--model", "bn_cnnn"],
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "Did you mean 'bn_cnn'" in p.stderr and "Traceback" not in p.stderr


def test_import_mnist_edge_does_not_need_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import mnist_edge, mnist_edge.zoo.registry, mnist_edge.data.mnist, mnist_edge.contract, mnist_edge.cli\n"
            "import mnist_edge.zoo.training, mnist_edge.training.options\n"
            "mnist_edge.cli.build_parser()\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_a_fixed_split_seed_holds_out_the_same_images_for_every_training_seed():
    from mnist_edge.exporter.temperature import seen_indices
    from mnist_edge.training.loop import split_indices

    fixed = [split_indices(60_000, 5_000, seed, split_seed=0)[1] for seed in (0, 1, 2)]
    assert all(np.array_equal(fixed[0], v) for v in fixed)
    assert not np.array_equal(split_indices(60_000, 5_000, 1)[1], fixed[0])  # unset: the training seed draws it
    seen = seen_indices({"recipe": {"val_size": 5_000, "split_seed": 0}, "metrics": {"seed": 2}}, 60_000)
    assert np.array_equal(np.setdiff1d(np.arange(60_000), seen), fixed[0])  # export fits T on the held-out ones


@pytest.mark.parametrize("share, tail_calls", [(0.0, 0), (0.5, 2), (1.0, 2)])
def test_the_augment_tail_augments_only_its_share_in_the_last_epochs(digits, monkeypatch, share, tail_calls):
    from mnist_edge.training import augment

    calls = []

    def counting(x, gen):
        calls.append(len(x))
        return torch.ones_like(x)

    monkeypatch.setitem(augment.AUGMENTATIONS, "edge", counting)
    recipe = dataclasses.replace(TINY_RECIPE, augment="edge", augment_tail=1, augment_tail_share=share)
    train(Tiny(), recipe, digits, name="tiny", contract=Contract(),
          options=TrainOptions(limit_train=256, plot=False, test_each_epoch=False))
    assert calls == [128, 128] + [128] * tail_calls  # epoch 1 augments every batch, the tail only its share


def test_the_tail_can_augment_with_another_augmentation(digits, monkeypatch):
    from mnist_edge.training import augment

    calls = []
    for name in ("edge", "edge_strokes"):
        monkeypatch.setitem(augment.AUGMENTATIONS, name, lambda x, gen, name=name: calls.append(name) or x)
    recipe = dataclasses.replace(TINY_RECIPE, augment="edge", augment_tail=1, augment_tail_share=1.0,
                                 augment_tail_with="edge_strokes")
    train(Tiny(), recipe, digits, name="tiny", contract=Contract(),
          options=TrainOptions(limit_train=256, plot=False, test_each_epoch=False))
    assert calls == ["edge", "edge", "edge_strokes", "edge_strokes"]


def test_edge_strokes_only_thins_or_thickens():
    from mnist_edge.training.augment import cross_morph, edge_strokes

    x = torch.zeros(400, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    out = edge_strokes(x, torch.Generator().manual_seed(0))
    thin, thick = cross_morph(x, dilate=False), cross_morph(x, dilate=True)
    kind = [0 if torch.equal(o, a) else 1 if torch.equal(o, t) else 2 if torch.equal(o, k) else 3
            for o, a, t, k in zip(out, x, thin, thick)]
    assert 3 not in kind  # nothing warped or noisy: each image is as it was, thinned or thickened
    assert 200 < kind.count(0) < 360 and 20 < kind.count(1) < 100 and 20 < kind.count(2) < 100


@pytest.mark.parametrize("name, noisy", [("edge_nowarp", 0.3), ("edge_nowarp_light", 0.1)])
def test_edge_nowarp_leaves_digits_in_place(name, noisy):
    from mnist_edge.training.augment import AUGMENTATIONS, cross_morph

    x = torch.zeros(400, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 1.0
    out = AUGMENTATIONS[name](x, torch.Generator().manual_seed(0))
    # no warp: every changed pixel is noise or a stroke edge, so the thickened digit bounds everything ...
    assert (out[:, :, :9] <= 40 / 255 * 6).all() and (out[:, :, 19:] <= 40 / 255 * 6).all()
    # ... and the rest are noise-free copies of the digit, thinned, thickened or as they are
    same = [any(torch.equal(o, v) for v in (a, cross_morph(a[None], False)[0], cross_morph(a[None], True)[0]))
            for o, a in zip(out, x)]
    assert abs(1 - sum(same) / len(same) - noisy) < 0.1


def test_train_variant_script_types_settings_and_names_the_valid_keys():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "experiments" / "train_variant.py"
    spec = importlib.util.spec_from_file_location("train_variant", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    recipe = get_spec("edge_cnn").recipe
    assert mod.parse_settings(recipe, ["epochs=80", "augment_tail_share=0.25", "nesterov=false", "split_seed=3"]) == {
        "epochs": 80, "augment_tail_share": 0.25, "nesterov": False, "split_seed": 3}
    with pytest.raises(SystemExit, match="expected KEY=VALUE with KEY one of optimizer, lr, .*augment_tail"):
        mod.parse_settings(recipe, ["epoch=80"])


@pytest.mark.parametrize("native", [True, False])
def test_a_bf16_recipe_autocasts_only_where_the_cpu_has_bf16(digits, monkeypatch, tmp_path, native):
    from mnist_edge.system import machine

    monkeypatch.setattr(machine, "native_bf16", lambda: (native, "stub CPU"))
    seen, lines = [], []
    net = Tiny()  # records, call by call, whether the network computes under autocast
    net.register_forward_pre_hook(lambda mod, args: seen.append(torch.is_autocast_enabled("cpu")))
    recipe = dataclasses.replace(TINY_RECIPE, batch_size=64, epochs=1, bf16=True)
    r = train(net, recipe, digits, name="tiny", contract=Contract(),
              options=TrainOptions(limit_train=256, out=tmp_path / "c.pt", plot=False, progress=lines.append))
    train_calls = seen[:4]  # 256 images at batch 64: the training steps come first, then the test pass
    assert all(train_calls) == native and not any(seen[4:])  # evaluation always runs in float32
    assert read_checkpoint(r.checkpoint)["metrics"]["precision"] == ("bf16 autocast" if native else "float32")
    assert any(line.startswith("precision: " + ("bf16 autocast" if native else "float32")) for line in lines)


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    from mnist_edge.system import machine

    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    for flags, expected in (("avx2 avx512f avx512_bf16", True), ("avx2 amx_bf16", True), ("avx2 avx512f", False)):
        monkeypatch.setattr(machine, "_read", lambda path, f=flags: f"vendor_id : X\nmodel name : X\nflags : {f}\n")
        assert machine.native_bf16()[0] is expected


def test_the_fast_recipe_scores_the_test_set_once_and_the_seed_recipe_every_epoch(digits):
    assert [zoo_training(get_spec(m), r).test_each_epoch for m, r in
            (("mlp", "fast"), ("mlp", "seed"), ("edge_cnn", "fast"))] == [False, True, True]  # edge_cnn: one recipe
    fast = zoo_train("mlp", digits, "fast", epochs=2, limit_train=512, seed=0, plot=False)
    seed = zoo_train("mlp", digits, epochs=2, limit_train=512, seed=0, plot=False)
    assert ["test_acc" in h for h in fast.history] == [False, False] and 10 < fast.test_accuracy <= 100
    assert ["test_acc" in h for h in seed.history] == [True, True]
    assert seed.test_accuracy == seed.history[-1]["test_acc"]  # the final pass is the last epoch's


def test_batchnorm_reestimation_is_the_cumulative_average_of_the_batches_and_touches_nothing_else():
    from mnist_edge.training.batchnorm import reestimate_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Dropout(0.5), torch.nn.BatchNorm2d(3))
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.rand(8, 1, 6, 6) * (i + 1) for i in range(3)]
    assert reestimate_batchnorm(net, batches) == 1
    bn = net[2]
    with torch.no_grad():  # the dropout stayed in eval mode: the conv's output as it is
        feats = [net[0](b) for b in batches]
    assert torch.allclose(bn.running_mean, torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack([f.var((0, 2, 3)) for f in feats]).mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and not net.training and not bn.training
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert reestimate_batchnorm(torch.nn.Linear(2, 2), batches) == 0  # no batch norm: nothing to do


def test_the_reestimate_bn_step_equals_training_then_reestimating(digits):
    """The recipe step inside train() and scripts/experiments/reestimate_bn.py's use of the same function after
    a run without it give the same model: the committed edge_cnn was made the second way."""
    from mnist_edge.training.loop import reestimate_final_bn, split_indices
    from mnist_edge.zoo.networks import EdgeModel

    job = zoo_training(get_spec("edge_cnn"), epochs=1)
    options = TrainOptions(limit_train=1280, plot=False, test_each_epoch=False)
    runs = {flag: train(job.build_net, dataclasses.replace(job.recipe, reestimate_bn=flag), digits, name=job.name,
                        contract=job.contract, options=options)
            for flag in (False, True)}
    plain, run = runs[False], runs[True]
    x = digits.train.images
    train_idx, _ = split_indices(len(x), job.recipe.val_size, 0, 1280, job.recipe.split_seed)
    before = {k: v.clone() for k, v in plain.net.state_dict().items()}
    prepare = EdgeModel(plain.net, job.contract.mean, job.contract.std, job.contract.input_size).prepare
    record = reestimate_final_bn(plain.net, prepare, torch.from_numpy(x[train_idx]).unsqueeze(1), (None, None))
    assert record == {"layers": 5, "images": 1280, "batch": 500}
    after = plain.net.state_dict()
    assert not torch.equal(after["features.0.1.running_mean"], before["features.0.1.running_mean"])
    for k, v in run.net.state_dict().items():
        assert torch.equal(v, after[k]), k
