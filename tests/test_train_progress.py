"""train/progress.py: bars only on a terminal, one plain log line per epoch that stays; the real
``butterfly-onnx finetune`` with stderr redirected to a file writes no carriage return or escape
sequence, and its log lines match metrics.json."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402

import butterfly_onnx  # noqa: E402
from butterfly_onnx.train.progress import LOGGER, bars_enabled, epoch_line, log_to_stderr, run_logging  # noqa: E402

pytestmark = pytest.mark.train


def _colour_dataset(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for label, colour in {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i}.png")
    return root


def test_bars_only_on_a_terminal(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert bars_enabled(None) is False and bars_enabled(True) is True
    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert bars_enabled(None) is True and bars_enabled(False) is False


def test_epoch_line_names_phase_losses_accuracy_lr_and_time():
    row = {
        "epoch": 2,
        "phase": "finetune",
        "cached": False,
        "train_loss": 0.51234,
        "train_acc": 0.8,
        "val_loss": 0.6,
        "val_acc1": 0.75,
        "val_acc5": 1.0,
        "lr_head": 1e-3,
        "lr_backbone": 1e-4,
        "seconds": 12.34,
    }
    line = epoch_line(row, 5, best_epoch=2)
    assert line == (
        "epoch 2/5 (finetune): train loss 0.5123 acc 0.8000 | val loss 0.6000 top-1 0.7500 top-5 1.0000 "
        "| lr 1.00e-04 | 12.3 s *"
    )
    assert "\r" not in line and "\x1b" not in line


def test_log_lines_reach_stderr_only_when_nothing_else_takes_them(capsys, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's own capture handler aside
    with run_logging(None, bars=False):
        LOGGER.info("hello")
    with run_logging(False, bars=False):  # progress=False: quiet unless logging is configured
        LOGGER.info("quiet")
    with log_to_stderr():
        LOGGER.info("forced")
    assert capsys.readouterr().err.splitlines() == ["hello", "forced"]
    assert not LOGGER.handlers


def test_cli_finetune_redirected_log_is_plain_lines(tmp_path):
    data = _colour_dataset(tmp_path / "data")
    log = tmp_path / "finetune.log"
    out = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(butterfly_onnx.__file__).resolve().parent.parent)
        + os.pathsep
        + os.environ.get("PYTHONPATH", ""),
    }
    cmd = [
        sys.executable,
        "-m",
        "butterfly_onnx",
        "finetune",
        str(data),
        "--out",
        str(out),
        "--model",
        "mobilenet_v3_small",
        "--weights",
        "none",
        "--epochs",
        "3",
        "--head-epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--head-steps",
        "10",
        "--threads",
        "1",
        "--preprocess",
        '{"resize_size": 72, "crop_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}',
    ]
    with open(log, "wb") as handle:
        subprocess.run(cmd, stderr=handle, stdout=subprocess.DEVNULL, env=env, check=True, timeout=600)
    text = log.read_bytes().decode()
    assert "\r" not in text and "\x1b" not in text  # no bar redraws, no terminal escapes
    lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert len(lines) == len(history) == 3
    for line, row in zip(lines, history, strict=True):
        assert line.startswith(f"epoch {row['epoch']}/3 ({row['phase']}")
        assert f"top-1 {row['val_acc1']:.4f}" in line and f"val loss {row['val_loss']:.4f}" in line
    for line in lines:  # each once: not also through the command line's own log handler
        assert text.count(line[:40]) == 1, text
    assert any(line.startswith("best epoch") or line.startswith("the linear probe") for line in text.splitlines())
