"""``convlens serve``: an interactive explorer of a model in the browser."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from pathlib import Path
from typing import Any

from convlens.cli.common import add_model_args, load_model

FLAGS = {
    "images": "--images",
    "data": "--data",
    "dissection": "--dissection",
    "concepts": "--concepts",
}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="explore MODEL in the browser: top-5, CAMs, units, ablation, filters",
        description="Start a local web server and print its URL. The page shows an image's "
        "top-5 classes, the map of any class (CAM family), the most active units of a "
        "layer, the top-5 after switching units off, the fewest units that flip the top-1, "
        "the filters of a conv layer, a unit's atlas card when --dissection is given, and the "
        "image's concepts when --concepts is given.",
    )
    add_model_args(p)
    p.add_argument("--images", type=Path, help="a folder of images to browse")
    p.add_argument(
        "--data",
        choices=("test", "none"),
        help="browse the FashionMNIST test set [test for 28x28 grayscale models]",
    )
    p.add_argument("--dissection", type=Path, help="a `convlens dissect` folder for unit cards")
    p.add_argument("--concepts", type=Path,
                   help="a `convlens concepts` folder: the image's concept maps")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind [127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="[8000]")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (repeatable); loopback names and "
        "the --host address are always allowed, any other Host header is refused",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from convlens.serve.app import create_app
    from convlens.serve.explorer import Explorer

    check_address(args.host, args.port)  # before the model loads: fail fast
    loaded = load_model(args)
    fashion = loaded.preprocessing.channels == 1 and loaded.preprocessing.size == 28
    data = args.data or ("test" if fashion else "none")
    explorer = Explorer(
        loaded,
        images_dir=args.images,
        data=None if data == "none" else data,
        dissection=args.dissection,
        data_dir=args.data_dir,
        concepts=args.concepts,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: binding to {args.host} makes the explorer reachable from other "
            "machines; it has no authentication",
            file=sys.stderr,
        )
    print(f"convlens explorer for {loaded.name}: http://{args.host}:{args.port}/", flush=True)
    try:
        hosts = [*args.allow_host, args.host]
        app = create_app(explorer, allow_hosts=hosts)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        explorer.close()
    return 0


def check_address(host: str, port: int) -> None:
    """Raise ValueError, naming the flag, when the server could not listen on ``host``:
    ``port``: a port out of range, a host name that does not resolve, or an address
    already in use (or not this machine's)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"`port` {port} is out of range: give a port in 1..65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ValueError(
            f"`host` {host!r} does not resolve ({reason}); give an address such as 127.0.0.1"
        ) from e
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as e:
            raise ValueError(
                f"cannot listen on {host}:{port} ({e.strerror}): "
                + (
                    "another program uses that port; choose another `port`"
                    if e.errno == errno.EADDRINUSE
                    else "choose another `port`, or a `host` of this machine"
                )
            ) from e
