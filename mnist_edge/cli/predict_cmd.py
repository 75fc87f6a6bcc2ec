"""`mnist-edge predict`: classify image files with an exported model (torch-free)."""

from __future__ import annotations

import sys
import time

from mnist_edge.cli import add_command


def register(sub) -> None:
    from mnist_edge.artifacts import MODEL_HELP

    p = add_command(sub, "predict", "classify digit images with an exported ONNX model (no torch needed)",
                    "For a one-channel digit model (the zoo's, and yours unless it takes more channels) each image is "
                    "normalized the way MNIST normalized its digits (any size, dark-on-light or light-on-dark, "
                    "noisy scans and photos); for any other model it is plainly resized to 28x28 grey. One line "
                    "per image; a file that cannot be read or "
                    "holds no digit gets an error line of its own, the others are still classified, and the exit "
                    "status is 1 when any failed.",
                    ["mnist-edge predict digit.png scans/", "mnist-edge predict --top-k 3 --min-confidence 0.9 --json *.jpg",
                     "mnist-edge predict --model exported/lenet5 --save-inputs seen/ photo.jpg"])
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files or folders of them (PNG, JPEG, BMP, ...; needs Pillow)")
    p.add_argument("--model", metavar="NAME_OR_PATH", help=MODEL_HELP)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--strict-device", action="store_true",
                   help="fail when onnxruntime would run any node on the CPU although --device is a GPU")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="also list the K most probable digits")
    p.add_argument("--min-confidence", type=float, metavar="P",
                   help="answer 'unsure' instead of a digit when its probability is below P, 0 < P < 1 "
                        "(docs/confidence.md says what share of errors a P catches)")
    p.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    p.add_argument("--threads", type=int, metavar="N", help="onnxruntime threads (default: one per core)")
    p.add_argument("--save-inputs", metavar="DIR",
                   help="write the 28x28 image the model saw for each file to DIR/<name>.png")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines on stderr (shown only while reading takes over 2 s)")
    p.set_defaults(func=run)


class Throttled:
    """Progress lines on stderr for a run that turns out long: nothing for the first ``after`` seconds (a few
    images answer at once, silently), then at most one line per ``every`` seconds."""

    def __init__(self, after: float = 2.0, every: float = 1.0, clock=time.monotonic, stream=None):
        self.clock, self.stream, self.every = clock, stream, every
        self.next = clock() + after

    def __call__(self, message: str) -> None:
        now = self.clock()
        if now >= self.next:
            print(f"  {message}", file=self.stream or sys.stderr, flush=True)
            self.next = now + self.every


def run(args) -> int:
    from mnist_edge.runtime import classify_files

    out = classify_files(images=args.images, model=args.model, device=args.device, top_k=args.top_k,
                        threads=args.threads, save_inputs=args.save_inputs, strict=args.strict_device,
                        min_confidence=args.min_confidence, progress=None if args.quiet else Throttled())
    if args.json:
        import json

        print(json.dumps(out, indent=2))
        return 1 if out["failed"] else 0
    m = out["model"]
    from mnist_edge.runtime.placement import summary

    verified = "verified" if m["verified"] else "not hash-checked"
    print(f"model: {m['path']} ({m['name']}, {m['precision']}, {verified}) on {m['device']} via {m['provider']}"
          + (f" ({summary(m['placement'])})" if m["placement"] else ""), file=sys.stderr)
    for note in m["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for r in out["results"]:
        if "error" in r:
            print(f"mnist-edge predict: error: {r['error']}", file=sys.stderr)
            continue
        if r["confident"]:
            line = f"{r['image']}: {r['label']} ({r['probability']:.3f})"
        else:  # below --min-confidence: no digit, the best guess in brackets
            line = (f"{r['image']}: unsure (best guess {r['top_k'][0]['label']}, {r['probability']:.4f} < "
                    f"{out['min_confidence']:g})")
        if args.top_k > 1:
            line += "  top-{}: {}".format(args.top_k, ", ".join(f"{t['label']} {t['probability']:.3f}"
                                                                for t in r["top_k"]))
        print(line)
    if args.save_inputs and len(out["results"]) > out["failed"]:
        print(f"inputs the model saw: {args.save_inputs}/", file=sys.stderr)
    if out["failed"]:
        print(f"mnist-edge predict: {out['failed']} of {len(out['results'])} images failed", file=sys.stderr)
        return 1
    return 0
