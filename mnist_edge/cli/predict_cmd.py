"""`mnist-edge predict`: classify image files with an exported model (torch-free)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify digit images with an exported ONNX model (no torch needed)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...; needs Pillow)")
    p.add_argument("--model", metavar="FILE_OR_DIR",
                   help="an .onnx file or an artifact folder (default: exported/bn_cnn/model.int8.onnx)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--strict-device", action="store_true",
                   help="fail when onnxruntime would run any node on the CPU although --device is a GPU")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="also list the K most probable digits")
    p.add_argument("--json", action="store_true", help="print JSON instead of one line per image")
    p.add_argument("--threads", type=int, metavar="N", help="onnxruntime threads (default: one per core)")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.runtime import predict_files

    out = predict_files(images=args.images, model=args.model, device=args.device, top_k=args.top_k,
                        threads=args.threads, strict=args.strict_device)
    if args.json:
        import json

        print(json.dumps(out, indent=2))
        return 0
    m = out["model"]
    from mnist_edge.runtime.placement import describe

    verified = "verified" if m["verified"] else "not hash-checked"
    print(f"model: {m['path']} ({m['name']}, {m['precision']}, {verified}) on {m['device']} via {m['provider']} "
          f"({describe(m['placement'])})", file=sys.stderr)
    for note in m["notes"]:
        print(f"note: {note}", file=sys.stderr)
    for r in out["results"]:
        line = f"{r['image']}: {r['label']} ({r['probability']:.3f})"
        if args.top_k > 1:
            line += "  top-{}: {}".format(args.top_k, ", ".join(f"{t['label']} {t['probability']:.3f}"
                                                                for t in r["top_k"]))
        print(line)
    return 0
