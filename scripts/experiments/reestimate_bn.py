"""Apply the recipe step ``reestimate_bn`` to a checkpoint trained without it: what docs/edge-model.md did to T50.

    python scripts/experiments/reestimate_bn.py runs/t50/checkpoint.pt exported/edge_cnn/checkpoint.pt

The training images are drawn from the checkpoint's own record (recipe ``val_size``/``split_seed``,
``seed``, ``limit_train``) and the step is the one ``mnist-edge train`` takes after the final epoch
(``mnist_edge.training.loop.reestimate_final_bn``), on the same images in the same order, so the result equals a
training run with the step in its recipe. The test set is scored once, on the result; the checkpoint's
recipe, metrics and history keep everything else from the training run.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out", help="checkpoint path to write (may be the same file)")
    ap.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    args = ap.parse_args()

    import torch

    from mnist_edge.training.checkpoint import load_checkpoint, save_checkpoint
    from mnist_edge.data.mnist import data_sha256, load_mnist
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.training.loop import evaluate, reestimate_final_bn, split_indices
    from mnist_edge.zoo.registry import get_spec

    net, ckpt = load_checkpoint(args.checkpoint)
    recipe, metrics = dict(ckpt["recipe"]), dict(ckpt["metrics"])
    if recipe.get("reestimate_bn"):
        raise SystemExit(f"{args.checkpoint}: its recipe already re-estimates the batch-norm statistics")
    if ckpt["data_sha256"] != data_sha256(args.data):
        raise SystemExit(f"{args.checkpoint} was trained on other MNIST files than those found here")
    x_all, y_all = load_mnist("train", data_dir=args.data)
    x_test, y_test = load_mnist("test", data_dir=args.data)
    train_idx, val_idx = split_indices(len(x_all), recipe.get("val_size") or 0, metrics["seed"],
                                       metrics.get("limit_train"), recipe.get("split_seed"))

    def tensor(a):
        return torch.from_numpy(a.copy())

    prepare = build_edge_model(get_spec(ckpt["model"])).prepare
    validation = ((tensor(x_all[val_idx]).unsqueeze(1), tensor(y_all[val_idx]).long()) if val_idx is not None
                  else (None, None))
    record = reestimate_final_bn(net, prepare, tensor(x_all[train_idx]).unsqueeze(1), validation, log=print)
    _, test_acc = evaluate(net, prepare, tensor(x_test).unsqueeze(1), tensor(y_test).long())
    print(f"test accuracy {metrics['test_accuracy']:.2f}% -> {test_acc:.2f}%")
    recipe["reestimate_bn"] = True
    metrics.update(test_accuracy=test_acc, reestimate_bn={**record, "applied": "after training, by "
                                                          "scripts/experiments/reestimate_bn.py"})
    save_checkpoint(args.out, model=ckpt["model"], state_dict=net.state_dict(), recipe=recipe,
                    history=ckpt["history"], data_sha256=ckpt["data_sha256"], metrics=metrics, extra=ckpt["extra"],
                    architecture=(ckpt["net"], ckpt["kwargs"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
