"""What a fine-tune shows while it runs: tqdm bars on a terminal, and one log line per epoch
(``logging``, logger ``butterfly_onnx.train``) that stays in a redirected log.

``progress=None`` (the default) shows bars only when stderr is a terminal, so a log written to
a file holds no carriage returns or escape sequences; ``True`` forces them, ``False`` shows
none and leaves the log lines to the application's logging configuration.  When nothing
configures logging, the run prints its log lines to stderr itself (and above the bars).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["LOGGER", "bars_enabled", "bar", "log_to_stderr", "run_logging", "epoch_line"]

LOGGER = logging.getLogger("butterfly_onnx.train")


def bars_enabled(progress: bool | None) -> bool:
    """``progress`` resolved: None means "stderr is a terminal"."""
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def bar(enabled: bool, total: int, desc: str | None, leave: bool = True) -> Any:
    """A tqdm bar, or None when bars are off."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=leave, dynamic_ncols=True)


@contextlib.contextmanager
def log_to_stderr() -> Iterator[None]:
    """The training log lines (INFO) as plain lines on stderr, until the block ends, and only
    there: they do not also propagate to the package logger (whose console handler, under the
    command line, would print each line a second time)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = LOGGER.level, LOGGER.propagate
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(previous[0])
        LOGGER.propagate = previous[1]


@contextlib.contextmanager
def run_logging(progress: bool | None, bars: bool) -> Iterator[None]:
    """During a run: when logging is not configured and output is wanted (``progress`` is not
    False), :func:`log_to_stderr`; with bars on, every line is written above the bars (tqdm's
    ``logging_redirect_tqdm``)."""
    with contextlib.ExitStack() as stack:
        if progress is not False and not LOGGER.hasHandlers():
            stack.enter_context(log_to_stderr())
        if bars:
            from tqdm.contrib.logging import logging_redirect_tqdm

            stack.enter_context(logging_redirect_tqdm(loggers=[LOGGER]))
        yield


def epoch_line(row: dict[str, Any], epochs: int, best_epoch: int) -> str:
    """The epoch's one log line: phase, losses, validation top-1/top-5, learning rates, time."""
    lr = f"lr {row['lr_head']:.2e}"
    if row["phase"] != "head":
        lr = f"lr {row['lr_backbone']:.2e}"
    mark = " *" if row["epoch"] == best_epoch else ""
    return (
        f"epoch {row['epoch']}/{epochs} ({row['phase']}{', cached' if row['cached'] else ''}): "
        f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
        f"val loss {row['val_loss']:.4f} top-1 {row['val_acc1']:.4f} top-5 {row['val_acc5']:.4f} | "
        f"{lr} | {row['seconds']:.1f} s{mark}"
    )
