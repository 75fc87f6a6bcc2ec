"""Named recipes (seed, fast), their schedules, and training on a shared machine (no timing asserted)."""

import os
import subprocess
import sys

import pytest
import torch

from mnist_edge.data.dataset import load_digits
from mnist_edge.errors import UsageError
from mnist_edge.system.busy import BUSY_SHARE, OtherLoad, busy_line
from mnist_edge.training.checkpoint import read_checkpoint
from mnist_edge.training.loop import TrainOptions, train
from mnist_edge.training.optim import make_optimizer, make_scheduler
from mnist_edge.zoo.registry import MODELS, Recipe, get_spec
from mnist_edge.zoo.training import FAST, RECIPE_NAMES, make_recipe, recipe_for, zoo_training


def test_every_seed_model_has_a_fast_recipe_that_states_itself():
    seeded = {name for name, spec in MODELS.items() if spec.seed_file}
    assert set(FAST) == seeded
    for name in seeded:
        spec = get_spec(name)
        fast = recipe_for(spec, "fast")
        assert recipe_for(spec, "seed") is spec.recipe
        assert fast.notes.startswith("fast:") and fast.select in ("final", "val_loss")
        # the notes (shown in cards and --help) say the schedule the fields hold
        assert f"{fast.epochs} epoch" in fast.notes and f"batch {fast.batch_size}" in fast.notes, name
        mantissa, exponent = f"{fast.lr:.0e}".split("e")
        assert f"{fast.lr:g}" in fast.notes or f"{mantissa}e{int(exponent)}" in fast.notes, name
        assert ("label smoothing" in fast.notes) == bool(fast.label_smoothing), name
        assert fast.epochs < spec.recipe.epochs or fast.batch_size > spec.recipe.batch_size, name
        assert make_recipe(spec, "fast") == fast  # no override: the registered recipe itself
    ours = get_spec("edge_cnn")  # no seed: its own recipe is the only one, under both names
    assert recipe_for(ours, "fast") is recipe_for(ours, "seed") is ours.recipe
    assert [zoo_training(get_spec(m), r).recipe_label for m, r in (("bn_cnn", "fast"), ("edge_cnn", "fast"))] == [
        "fast", "its own"]  # what `mnist-edge train`'s first line calls the recipe


def test_unknown_recipe_names_the_valid_ones():
    with pytest.raises(UsageError, match="valid: seed, fast"):
        recipe_for(get_spec("mlp"), "turbo")
    assert RECIPE_NAMES == ("seed", "fast")


def test_onecycle_steps_per_batch_and_peaks_at_the_recipe_rate():
    r = Recipe(optimizer="sgd", lr=0.4, momentum=0.9, batch_size=10, epochs=2, schedule="onecycle", warmup=0.5)
    opt = make_optimizer(r, [torch.nn.Parameter(torch.zeros(1))])
    sched, per_batch = make_scheduler(r, opt, steps_per_epoch=5)
    assert per_batch
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(rates) == pytest.approx(0.4) and rates.index(max(rates)) == 4  # warmup: half of 10 steps
    assert rates[0] < 0.4 / 10 and rates[-1] < rates[5]


def test_step_schedule_is_per_epoch_and_a_bad_schedule_is_named():
    spec = get_spec("bn_cnn")
    opt = make_optimizer(spec.recipe, [torch.nn.Parameter(torch.zeros(1))])
    sched, per_batch = make_scheduler(spec.recipe, opt, steps_per_epoch=100)
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR) and not per_batch
    assert make_scheduler(get_spec("mlp").recipe, opt, 100) == (None, False)  # constant rate
    bad = Recipe(optimizer="sgd", lr=0.1, batch_size=1, epochs=1, schedule="cosine")
    with pytest.raises(UsageError, match="valid: step, onecycle"):
        make_scheduler(bad, opt, 1)


def test_fast_recipe_run_records_its_name_and_saves_plain_contiguous_weights(mnist_dir, tmp_path):
    # bn_cnn's fast recipe trains channels-last with label smoothing and a per-batch schedule
    lines = []
    job = zoo_training(get_spec("bn_cnn"), "fast", epochs=1)
    options = TrainOptions(limit_train=512, seed=0, out=tmp_path / "c.pt", plot=False, test_each_epoch=False,
                           progress=lines.append, recipe_name=job.recipe_name)
    r = train(job.build_net, job.recipe, load_digits(mnist_dir), name=job.name, contract=job.contract,
              net_args=job.net_args, options=options)
    ckpt = read_checkpoint(tmp_path / "c.pt")
    assert ckpt["metrics"]["recipe_name"] == "fast"
    assert ckpt["recipe"]["schedule"] == "onecycle" and ckpt["recipe"]["channels_last"] is True
    assert all(t.is_contiguous() for t in ckpt["state_dict"].values())
    assert lines[0].startswith("bn_cnn epoch 1/1: train loss ")  # no bar asked for: one line per epoch
    assert 0 <= r.test_accuracy <= 100 and r.history[0]["lr"] < FAST["bn_cnn"].lr  # one-cycle: ended low


def test_weight_average_ramps_up_and_is_the_model_the_recipe_returns():
    from mnist_edge.training.epoch import EpochLoop

    r = Recipe(optimizer="sgd", lr=0.5, batch_size=8, epochs=1, ema=0.9)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))
    x, y = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), torch.tensor([0, 1] * 4)
    loop = EpochLoop(net, lambda v: v, make_optimizer(r, net.parameters()), None, r,
                     torch.Generator().manual_seed(0), (x, y))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    assert loop.model() is not net
    loop.run_epoch(None)  # one step; its decay is (1 + 1) / (10 + 1), ramping up to the recipe's 0.9
    d = 2 / 11
    for k, w in net.state_dict().items():
        assert not torch.equal(w, start[k])
        torch.testing.assert_close(loop.model().state_dict()[k], d * start[k] + (1 - d) * w)


def test_the_first_status_line_comes_before_torch_is_loaded(mnist_dir):
    # What a user waits for before seeing anything: the line must not wait for torch's ~3 s import.
    code = ("import sys\n"
            "from mnist_edge.cli import main\n"
            "class Err:\n"
            "    def write(self, text):\n"
            "        if text.strip():\n"
            "            first = text.startswith('mlp: seed recipe, 1 epochs of batch 64')\n"
            "            raise SystemExit(0 if first and 'torch' not in sys.modules else 1)\n"
            "    def flush(self):\n"
            "        pass\n"
            "sys.stderr = Err()\n"
            f"main(['train', '--model', 'mlp', '--epochs', '1', '--limit-train', '64', '--data', {str(mnist_dir)!r}])\n"
            "sys.exit(2)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_openmp_threads_spin_only_briefly_unless_the_user_chose():
    code = ("import os\n"
            "from mnist_edge.torchrun import bounded_openmp_spin\n"
            "print(bounded_openmp_spin(), os.environ.get('GOMP_SPINCOUNT'))\n"
            "import torch\n"
            "print(bounded_openmp_spin())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.stdout.split() == ["True", "20000", "False"], p.stderr
    for user in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **user})
        assert p.stdout.split()[0] == "False" and p.stdout.split()[1] == user.get("GOMP_SPINCOUNT", "None"), p.stderr


def test_training_keeps_freed_memory_instead_of_faulting_it_in_again():
    # the pattern glibc's adaptive thresholds handle badly: blocks below its mmap threshold, freed together,
    # more than its trim threshold at once, so each round hands the pages back and faults them in again
    code = ("import resource, sys\n"
            "import numpy as np\n"
            "from mnist_edge.torchrun import keep_freed_memory\n"
            "took = keep_freed_memory()\n"
            "np.ones(8 << 20, np.uint8)\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(20):\n"
            "    blocks = [np.ones(7 << 20, np.uint8) for _ in range(3)]\n"
            "    del blocks\n"
            "print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    took, faults = p.stdout.split()
    assert took == "True", p.stderr
    assert int(faults) < 5_000, faults  # 20 rounds of 21 MB are 107,520 pages: glibc's default faulted ~35,000
    for user in ({"MALLOC_TRIM_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **user})
        assert p.stdout.split()[0] == "False", p.stderr  # the user's own malloc settings stand


def test_busy_line_only_when_others_take_a_real_share_of_the_cores():
    assert busy_line(None, 2, "training") is None
    assert busy_line(BUSY_SHARE * 2, 2, "training") is None
    line = busy_line(1.5, 2, "training")
    assert line.startswith("machine busy: other processes kept 1.5 of 2 cores busy; training is slower")
    load = OtherLoad()
    assert load.cores() is None  # too soon to say anything
    sum(i * i for i in range(3_000_000))  # our own work is not "other processes"
    reading = load.cores()
    assert reading is None or reading >= 0
