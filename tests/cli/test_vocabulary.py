"""One CLI grammar: a flag means the same and takes the same form on every command."""

from __future__ import annotations

import argparse
from collections import defaultdict

import pytest

from convlens.cli import build_parser
from convlens.cli.common import parse_ints
from tests.helpers import one_error_line


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_a_shared_flag_takes_the_same_form_everywhere() -> None:
    forms: dict[str, dict[str, tuple[object, ...]]] = defaultdict(dict)
    for name, parser in commands().items():
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    # train reads its flags as strings and types them by TrainConfig's fields
                    kind = getattr(action.type, "__name__", None) or "str"
                    if name == "train":
                        kind = "typed by TrainConfig"
                    forms[flag][name] = (action.nargs, kind, type(action).__name__)
    shared = {flag: seen for flag, seen in forms.items() if len(seen) > 1}
    assert "--units" in shared and "--layer" in shared and "--out" in shared
    differ = {
        flag: seen
        for flag, seen in shared.items()
        if len({form for command, form in seen.items() if command != "train"}) > 1
        or any(form[:1] != next(iter(seen.values()))[:1] for form in seen.values())
        if flag not in DIFFERENT_ON_PURPOSE
    }
    assert not differ, differ


# flags whose form differs between commands because their meaning does, with why
DIFFERENT_ON_PURPOSE = {
    "--methods": "report draws any number of methods, none too; faithfulness scores 1 or more",
    "--preset": "train takes one preset; sweep runs several, one trial each",
}


@pytest.mark.parametrize("command", ["units", "ablate", "visualize", "report"])
def test_units_take_spaces_and_commas_on_every_command(command: str) -> None:
    parser = commands()[command]
    args = ["fashion-cnn", "test:0"] if command != "visualize" else ["fashion-cnn"]
    if command == "units":
        args += ["--layer", "features"]
    for given in (["0", "1", "2"], ["0,1,2"], ["0,1", "2"]):
        ns = parser.parse_args([*args, "--units", *given])
        assert parse_ints(ns.units, "--units") == [0, 1, 2]


def test_filters_take_both_forms() -> None:
    parser = commands()["filters"]
    for given in (["0", "3"], ["0,3"]):
        ns = parser.parse_args(["fashion-cnn", "--filters", *given, "--in-channels", *given])
        assert parse_ints(ns.filters, "--filters") == parse_ints(ns.in_channels, "-") == [0, 3]


def test_the_objectives_the_cli_offers_are_the_librarys() -> None:
    """``visualize --objective`` offers exactly :data:`objectives.KINDS` (written out in
    the parser, which is built without importing torch)."""
    from convlens.interpret import objectives

    option = commands()["visualize"]._option_string_actions["--objective"]
    assert tuple(option.choices or ()) == objectives.KINDS


def test_every_command_that_loads_a_model_takes_device() -> None:
    """``--device`` (auto, cpu, cuda, cuda:N, mps) on every command with a MODEL."""
    with_model = [
        name
        for name, p in commands().items()
        if any(a.dest == "model" for a in p._actions) and name not in ("train", "sweep")
    ]
    assert {"predict", "evaluate", "filters", "units", "ablate", "cam", "faithfulness",
            "visualize", "dissect", "report", "serve", "layers"} <= set(with_model)  # fmt: skip
    for name in [*with_model, "demo"]:
        option = commands()[name]._option_string_actions.get("--device")
        assert option is not None and option.default == "auto", name
        option = commands()[name]._option_string_actions.get("--precision")
        assert option is not None and option.default == "fp32", name
        assert tuple(option.choices or ()) == ("fp32", "bf16", "fp16", "auto"), name


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "--device cuda asked for, but CUDA is not available here; use cpu"),
        ("cuda:3", "--device cuda:3 asked for, but CUDA is not available here"),
        ("tpu", "unknown --device 'tpu'; give auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_a_device_that_is_not_here_is_one_line_before_the_model_loads(
    device: str, message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from convlens import models
    from convlens.cli import main

    if torch.cuda.is_available() and device.startswith("cuda"):
        pytest.skip("CUDA is here")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load", refuse)
    assert (
        main(["cam", "torchvision:resnet18", "--weights", "none", "x.png", "--device", device]) == 2
    )
    assert message in one_error_line(capsys)


@pytest.mark.parametrize(
    ("precision", "message"),
    [
        ("bf16", "--precision bf16 asked for, but this CPU has no bf16 units"),
        ("fp16", "--precision fp16 asked for, but cpu has no fp16 hardware; use fp32 or auto"),
    ],
)
def test_a_precision_the_cpu_lacks_is_one_line_before_the_model_loads(
    precision: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a CPU without bf16 units (made so here whatever this machine has), bf16 would
    be emulated, slower than fp32: refused, as fp16 is on any CPU."""
    from convlens import models
    from convlens.cli import main
    from convlens.core import precision as precision_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load", refuse)
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: False)
    argv = ["cam", "fashion-cnn", "x.png", "--device", "cpu", "--precision", precision]
    assert main(argv) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ablate", "fashion-cnn", "test:0", "--min-units", "--order", "greedy",
          "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["evaluate", "fashion-cnn", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["cam", "fashion-cnn", "test:0", "--method", "gradcam", "--batch-size", "4"],
         "--batch-size is an option of scorecam, ablationcam, iscam, sscam, saliency"),
    ],
)  # fmt: skip
def test_batch_sizes_are_checked_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from convlens.cli import main

    assert main(argv) == 2
    assert message in one_error_line(capsys)
