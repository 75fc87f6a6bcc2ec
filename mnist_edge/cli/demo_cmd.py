"""`mnist-edge demo`: serve the browser demo (examples/web) with an exported model on 127.0.0.1."""

from __future__ import annotations

from mnist_edge.cli import add_command


def register(sub) -> None:
    from mnist_edge.artifacts import MODEL_HELP

    p = add_command(sub, "demo", "draw digits in your browser: serve the onnxruntime-web demo on 127.0.0.1",
                    "Serves examples/web (draw a digit, see fp32 and int8 predictions and their latency in the "
                    "browser) and an exported model. Needs `npm ci` in examples/web once, for onnxruntime-web. "
                    "Prints the address to open.",
                    ["mnist-edge demo --open", "mnist-edge demo --port 0 --model cnn_small"])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--model", metavar="NAME_OR_PATH", help=MODEL_HELP)
    p.add_argument("--web-dir", metavar="DIR", help="the demo page's folder (default: examples/web of the checkout)")
    p.add_argument("--open", action="store_true", help="also open the page in the default browser")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.demo import serve

    return serve(host=args.host, port=args.port, model=args.model, web_dir=args.web_dir,
                 quiet=not args.verbose, open_browser=args.open)
