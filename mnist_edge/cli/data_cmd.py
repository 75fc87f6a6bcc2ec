"""`mnist-edge data`: where the MNIST files are looked for and what was found; `data download` fetches them."""

from __future__ import annotations

import sys


def register(sub) -> None:
    from mnist_edge.cli import add_command

    p = add_command(sub, "data", "show where the MNIST files are looked for and whether they verify",
                    "The folder is --data if given, else $MNIST_EDGE_DATA, else the per-user cache; each of the "
                    "four files is shown as verified (known SHA-256), missing or wrong. `data download` fetches "
                    "missing files from the usual mirrors, verified, each written atomically.",
                    ["mnist-edge data", "mnist-edge data download",
                     "mnist-edge data download --data ~/mnist --mirror https://my.mirror/mnist/"])
    p.add_argument("action", nargs="?", choices=("show", "download"), default="show",
                   help="show (default) or download")
    p.add_argument("--data", metavar="DIR", help="MNIST folder (default: $MNIST_EDGE_DATA, then the per-user cache)")
    p.add_argument("--mirror", action="append", metavar="URL",
                   help="base URL to download from (repeatable; default: the usual MNIST mirrors): http(s)://, "
                        "with user:password@ for basic authentication (never shown), or file:///DIR/ for a "
                        "local folder holding the .gz files")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="network timeout in seconds (default 30)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.data.mnist import download_hint, status
    from mnist_edge.errors import UsageError

    if args.action == "download":
        from mnist_edge.data.download import download_mnist
        from mnist_edge.data.mnist import data_home

        if not args.timeout > 0:
            raise UsageError(f"--timeout {args.timeout} must be a positive number of seconds")
        download_mnist(data_home(args.data)[0], mirrors=args.mirror, progress=not args.no_progress,
                       timeout=args.timeout)
    elif args.mirror:
        raise UsageError("--mirror only applies to `mnist-edge data download`")
    folder, source, rows = status(args.data)
    print(f"MNIST folder: {folder} (from {source})")
    width = max(len(r.name) for r in rows)
    for r in rows:
        where = f"  {r.path}" if r.path is not None else ""
        print(f"  {r.name:<{width}}  {r.state}{where}")
    bad = [r.name for r in rows if r.state != "verified"]
    if bad:
        print(f"{len(bad)} of {len(rows)} files missing or wrong; get them with: {download_hint(args.data)}",
              file=sys.stderr)
        return 1
    print(f"all {len(rows)} files verified")
    return 0
