"""Inputs that once got the wrong answer: malicious checkpoints called "corrupt", images
after the options of `predict`, a bad address for `serve`, and a busy package manager
in CI. Each gets one line that names the problem and the fix."""

from __future__ import annotations

import builtins
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from convlens import models
from convlens.cli import build_parser, main
from convlens.cli.common import parse_args
from convlens.core.fileio import UnsafeCheckpointError
from tests.helpers import ROOT, one_error_line, write_categories

# ----------------------------------------------------------------------------- malicious files


class SystemPayload:
    """The textbook payload: unpickling calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class EvalPayload(SystemPayload):
    def __reduce__(self) -> tuple:
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w')",))


class PopenPayload(SystemPayload):
    def __reduce__(self) -> tuple:
        return (subprocess.Popen, (["touch", str(self.marker)],))


class PlainObject(SystemPayload):
    def __reduce__(self) -> tuple:  # a plain class instance, as pickle stores one
        return (PlainObject, (self.marker,))


PAYLOADS = {
    "os.system": (SystemPayload, "system"),
    "builtins.eval": (EvalPayload, "eval"),
    "subprocess.Popen": (PopenPayload, "Popen"),
    "plain class": (PlainObject, "PlainObject"),
}


def evil_file(folder: Path, payload: str, kind: str, legacy: bool) -> tuple[Path, Path]:
    """A checkpoint in convlens's or Places365's format whose pickle carries ``payload``;
    returns the file and the marker that the payload would create."""
    marker = folder / "ran"
    cls, _ = PAYLOADS[payload]
    weights = {"w": torch.zeros(2)}
    if kind == "convlens":
        record = {"format": "convlens-model", "config": {}, "model": weights, "x": cls(marker)}
    else:
        record = {"arch": "resnet18", "state_dict": weights, "x": cls(marker)}
    path = folder / f"evil-{kind}.pt"
    torch.save(record, path, _use_new_zipfile_serialization=not legacy)
    return path, marker


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_malicious_checkpoints_are_refused_as_such_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: str, legacy: bool
) -> None:
    named = PAYLOADS[payload][1]
    # the API: load_model's engine, models.load
    path, marker = evil_file(tmp_path, payload, "convlens", legacy)
    with pytest.raises(UnsafeCheckpointError, match=f"refused: .*pickled Python objects.*{named}"):
        models.load(path)
    # `convlens evaluate FILE`
    assert main(["evaluate", str(path)]) == 2
    line = one_error_line(capsys)
    assert "was refused" in line and named in line and "could run code" in line
    assert "corrupt" not in line and "truncated" not in line and "PyTorch 2.6" not in line
    # `--weights` of a Places365 model
    places, marker = evil_file(tmp_path, payload, "places365", legacy)
    write_categories(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    argv = ["predict", "places365-resnet18", "--weights", str(places), str(tmp_path / "x.png")]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "was refused" in line and named in line and "download it again" not in line
    time.sleep(0.2)  # a Popen payload would have had time to run
    assert not marker.exists(), "the payload ran"


def test_an_unknown_opcode_is_named_with_both_readings(tmp_path: Path) -> None:
    """Random bytes and a protocol-0 pickle that builds an object (INST) both meet an
    opcode that weights-only loading does not run: the message names both readings."""
    marker = tmp_path / "ran"
    for name, data in (
        ("noise.pt", b"<html>404 Not Found</html>"),
        ("inst.pt", f"(S'touch {marker}'\nios\nsystem\n.".encode()),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match="not a readable PyTorch checkpoint.*could run code"):
            models.load(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------- one grammar

# Every command that takes MODEL and images, with the flags it needs besides them.
IMAGE_COMMANDS = {
    "predict": [],
    "cam": [],
    "ablate": ["--units", "1"],
    "units": ["--layer", "features", "--top", "3"],
    "report": [],
}


@pytest.mark.parametrize("command", list(IMAGE_COMMANDS))
def test_images_go_before_or_after_the_options(command: str) -> None:
    parser = build_parser()
    extra = IMAGE_COMMANDS[command]
    orders = [
        [command, "fashion-cnn", "a.png", "--weights", "w.pt", *extra],
        [command, "fashion-cnn", *extra, "--weights", "w.pt", "a.png"],
    ]
    for argv in orders:
        args = parse_args(parser, argv)
        images = args.images if hasattr(args, "images") else [args.image]
        assert (args.model, args.weights, images) == ("fashion-cnn", "w.pt", ["a.png"]), argv
    if command in ("predict", "cam", "report"):  # several images, on both sides
        argv = [command, "fashion-cnn", "a.png", *extra, "--weights", "w.pt", "b.png"]
        assert parse_args(parser, argv).images == ["a.png", "b.png"]
    with pytest.raises(SystemExit):  # an unknown flag is still refused
        parse_args(parser, [command, "fashion-cnn", "a.png", "--nope", *extra])


def test_predict_with_weights_before_its_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "shirt.png"
    Image.new("L", (28, 28), 128).save(image)
    shipped = str(models.zoo.SHIPPED["fashion-cnn"])
    outputs = []
    for argv in (
        ["predict", "fashion-cnn", "--weights", shipped, str(image), "--top", "2"],
        ["predict", "fashion-cnn", str(image), "--top", "2", "--weights", shipped],
    ):
        assert main(argv) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].startswith(str(image))


# ----------------------------------------------------------------------------- serve's address


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_names_the_flag_for_a_bad_address(
    capsys: pytest.CaptureFixture[str], busy_port: int
) -> None:
    cases = [
        (["--port", "99999"], "--port 99999 is out of range: give a port in 1..65535"),
        (["--port", "-3"], "--port -3 is out of range"),
        (["--port", str(busy_port)], "another program uses that port; choose another --port"),
        (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' does not resolve"),
    ]
    for flags, expected in cases:
        assert main(["serve", "fashion-cnn", *flags]) == 2
        assert expected in one_error_line(capsys)


# ----------------------------------------------------------------------------- CI's apt-get

needs_root_apt = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None,
    reason="holds the package manager's lock: root and apt-get only",
)


def apt_get_while_held(lock: str, held_s: float, wait_s: int) -> subprocess.CompletedProcess:
    """``.ci/apt-get --version`` with ``APT_LOCK_WAIT=wait_s`` while another process
    holds ``lock`` for ``held_s`` seconds, as an unattended upgrade does."""
    code = (
        "import fcntl, os, time\n"
        f"fd = os.open({lock!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        f"time.sleep({held_s})\n"
    )
    holder = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        return subprocess.run(
            [str(ROOT / ".ci/apt-get"), "--version"],
            capture_output=True,
            text=True,
            env={**os.environ, "APT_LOCK_WAIT": str(wait_s), "APT_LOCK_LOG": "/dev/stderr"},
            timeout=wait_s + 30,
        )
    finally:
        holder.kill()
        holder.wait()


@needs_root_apt
def test_ci_apt_get_waits_for_a_held_lock_and_says_so() -> None:
    done = apt_get_while_held("/var/lib/apt/lists/lock", 3, 60)
    assert done.returncode == 0, done.stderr
    assert "waiting up to 60s for the package manager's lock" in done.stderr
    assert "/var/lib/apt/lists/lock held by process" in done.stderr
    assert "the lock is free after" in done.stderr and done.stdout.startswith("apt ")


@needs_root_apt
def test_ci_apt_get_gives_up_after_its_limit() -> None:
    done = apt_get_while_held("/var/lib/dpkg/lock-frontend", 6, 1)
    assert done.returncode == 100
    assert "gave up after 1s" in done.stderr and "raise APT_LOCK_WAIT" in done.stderr


def test_ci_and_make_install_through_the_waiting_apt_get() -> None:
    for name in (".ci/run", "Makefile"):
        lines = (ROOT / name).read_text().splitlines()
        bare = [ln for ln in lines if re.search(r"(?<![./\w])apt-get (install|update)", ln)]
        assert not bare, f"{name} calls apt-get without waiting for its lock: {bare}"
