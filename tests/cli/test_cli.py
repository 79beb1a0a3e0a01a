from __future__ import annotations

import json
from pathlib import Path

import pytest

from convlens.cli import build_parser, main
from convlens.cli.train import config_from_args
from convlens.config import PRESETS, TrainConfig, preset
from tests.helpers import needs_fashion, one_error_line

TINY = [
    "--epochs",
    "1",
    "--widths",
    "4,8",
    "--depth",
    "1,1",
    "--train-subset",
    "512",
    "--val-size",
    "500",
    "--precision",
    "fp32",
    "--no-progress",
]


@needs_fashion
def test_train_evaluate_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY]) == 0
    assert {"config.json", "metrics.json", "checkpoint.pt", "model.pt", "summary.json"} <= {
        p.name for p in run.iterdir()
    }
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((run / "summary.json").read_text())
    assert result["images"] == 10_000 and result["tta"] is True
    assert result["top1"] == pytest.approx(summary["test_top1"], abs=2e-3)
    # resuming a finished run changes nothing
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "metrics.json").read_text())[0]["epoch"] == 1
    assert main(["predict", str(run), "--test-index", "0", "7", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "test:0 (true: Ankle boot)" in out and out.count("%") == 6


def test_train_preset_then_config_file_then_flags(tmp_path: Path) -> None:
    def config(*argv: str) -> TrainConfig:
        return config_from_args(build_parser().parse_args(["train", "--out", "r", *argv]))

    assert config() == TrainConfig() == preset("default")
    best = config("--preset", "best")
    assert best == preset("best") and best != TrainConfig()
    for field, value in PRESETS["best"].items():  # each as the config would hold it
        assert getattr(best, field) == getattr(TrainConfig().replace(**{field: value}), field)
    cfg = tmp_path / "c.toml"
    cfg.write_text("epochs = 3\nlr = 0.1\n")
    layered = config("--preset", "best", "--config", str(cfg), "--lr", "0.2")
    assert (layered.epochs, layered.lr, layered.widths) == (3, 0.2, best.widths)


def test_config_file_with_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"lr": 0.1, "learning_rate": 0.1}))
    assert main(["train", "--out", str(tmp_path / "r"), "--config", str(cfg)]) == 2
    assert "unknown config key(s) learning_rate" in one_error_line(capsys)


def test_bad_flag_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "ten"]) == 2
    assert "epochs: cannot read 'ten' as int" in one_error_line(capsys)


def test_resume_rejects_config_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "drop the config flags (lr)" in one_error_line(capsys)


def test_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in one_error_line(capsys)


def test_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"<html>404 Not Found</html>")
    assert main(["evaluate", str(bad)]) == 2
    assert "not a readable PyTorch checkpoint" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("command", "argv", "fix"),
    [
        (
            "dissect",
            ["fashion-cnn", "--batch-size", "512"],
            "lower --batch-size (now 512)",
        ),
        (
            "cam",
            ["fashion-cnn", "test:0"],
            "use fewer or smaller images, or another --device",
        ),
    ],
)
def test_running_out_of_memory_is_one_line_that_says_what_to_lower(
    command: str, argv: list[str], fix: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A real allocation the CPU's allocator refuses, in place of the command's work."""
    import importlib

    import torch

    def too_big(args: object) -> int:
        torch.empty(2**50, dtype=torch.uint8)  # a petabyte
        return 0

    monkeypatch.setattr(importlib.import_module(f"convlens.cli.{command}"), "run", too_big)
    assert main([command, *argv]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"convlens {command}: error: out of memory on auto (")
    assert "can't allocate memory" in line and line.endswith(fix)
