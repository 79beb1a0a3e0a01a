"""The problem set's own job: ``convlens report`` for one image on a Places365 network,
timed as a user meets it (a fresh process, from the command to the written report).

The official weights cannot be downloaded here, so each network is a randomly
initialised one (seed 0) written in CSAIL's exact checkpoint format
(:func:`convlens.models.places365.save_checkpoint`) with a categories file beside it;
the work the report does is the same for any weights. The image is a smooth random
picture at 256x256. Issue 38's goals: places365-resnet18 within 45 s, places365-
wideresnet18 within 90 s (on a 2-core CPU with AMX, in the precision asked for).

    uv run python benchmarks/report_speed.py
    uv run python benchmarks/report_speed.py --device cuda --precision bf16 --json F
    uv run python benchmarks/report_speed.py --sections --precision bf16  # where it goes
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from convlens.core.fileio import atomic_write_json
from convlens.models import places365
from timing import add_device_args, placed, run_record

NETWORKS = ("places365-resnet18", "places365-wideresnet18")
COMMAND = "import sys; from convlens.cli import main; sys.exit(main())"


def write_inputs(folder: Path, name: str) -> tuple[Path, Path]:
    """An official-format checkpoint of ``name`` and a test image, in ``folder``."""
    arch = places365.ARCHS[name]
    torch.manual_seed(0)
    weights = places365.save_checkpoint(
        places365.build(arch).eval(), arch, folder / f"{arch}_places365.pth.tar"
    )
    lines = [f"/c/category_{i} {i}" for i in range(places365.NUM_CLASSES)]
    (folder / places365.CATEGORIES_FILE).write_text("\n".join(lines) + "\n")
    small = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image = folder / "image.png"
    Image.fromarray(small).resize((256, 256), Image.Resampling.BILINEAR).save(image)
    return weights, image


def time_report(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    weights, image = write_inputs(folder, name)
    command = [sys.executable, "-c", COMMAND, "report", name, str(image)]
    command += ["--weights", str(weights), "--out", str(folder / "report")]
    command += ["--device", args.device, "--precision", args.precision]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: report failed ({done.returncode}):\n{done.stderr[-2000:]}")
    print(f"{name}: convlens report, one image: {seconds:.1f} s")
    return {"network": name, "seconds": seconds, "report": (folder / "report/index.html").is_file()}


def time_sections(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The same report in this process, each section of the page timed (where the time
    goes; the imports and loading are not in it)."""
    from convlens.cli import main as cli
    from convlens.render import report

    seconds: dict[str, float] = {}

    def timed(section: Any) -> Any:
        def run(page: Any, context: Any) -> None:
            start = time.perf_counter()
            section(page, context)
            seconds[section.__name__] = time.perf_counter() - start

        return run

    weights, image = write_inputs(folder, name)
    every = report.SECTIONS
    report.SECTIONS = tuple(timed(section) for section in every)
    try:
        out = str(folder / "report")
        cli(["report", name, str(image), "--weights", str(weights), "--out", out,
             "--device", args.device, "--precision", args.precision])  # fmt: skip
    finally:
        report.SECTIONS = every
    print(f"{name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return {"network": name, "sections_s": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    p.add_argument("--sections", action="store_true",
                   help="time each section of the page, in this process")  # fmt: skip
    p.add_argument("--json", type=Path)
    add_device_args(p)
    args = p.parse_args()
    device, _ = placed(args)  # refuses a device or precision the machine lacks, as report does
    rows = []
    for name in args.networks:
        with tempfile.TemporaryDirectory() as folder:
            timer = time_sections if args.sections else time_report
            rows.append(timer(name, args, Path(folder)))
    if args.json:
        atomic_write_json(args.json, {"machine": run_record(args, device), "rows": rows})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
