"""``butterfly_onnx.serve`` (this module is ``serving`` so that the function is not shadowed
by a submodule of the same name): put a model behind an HTTP endpoint (the Rust core's server).

>>> from butterfly_onnx import serve                      # doctest: +SKIP
>>> serve("butterflies.onnx", port=8000)                  # doctest: +SKIP

There is one implementation, in the Rust crate (``rust/butterfly-onnx/src/serve/``): this
function opens the model as the rust backend does and hands it to that server with the GIL
released, exactly what ``butterfly-onnx serve`` (either CLI) runs.  It returns when the
process gets SIGTERM or Ctrl-C, or when its ``stop`` event is set, after answering the requests
in flight; the signals are Python's throughout (the server checks for them and for ``stop`` every
0.1 s), and the process's SIGTERM handler is put back when it returns.  Routes, batching, limits
and figures: docs/serving.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = ["serve"]

#: Stands for "the library's default" (Pillow's decompression-bomb limit) in max_image_pixels.
DEFAULT: Any = object()


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{name} must be an int or None, got {value!r}")
    if value < 1:
        raise InvalidArgumentError(f"{name} must be at least 1, got {value}")
    return value


class StopEvent(Protocol):
    """What ``serve(stop=)`` takes: a :class:`threading.Event`, or anything with ``is_set()``."""

    def is_set(self) -> bool: ...


class _Terminated(Exception):
    """Raised by serve's SIGTERM handler: the server stops gracefully and serve returns."""


@contextlib.contextmanager
def _sigterm_stops_serving() -> Iterator[None]:
    """The first SIGTERM raises :class:`_Terminated` and puts the previous handler back (a second
    one, during the graceful stop, is then handled as it was before serving); the previous handler
    is back in any case afterwards.  Python runs signal handlers on the main thread only:
    elsewhere nothing changes.  A handler installed from C (``signal.signal`` then gives None)
    cannot be put back from Python, so it is left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or not hasattr(signal, "SIGTERM")
        or signal.getsignal(signal.SIGTERM) is None
    ):
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, previous)
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    model: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    max_batch: int | None = None,
    max_wait_ms: int | None = None,
    max_queue: int | None = None,
    max_body_bytes: int | None = None,
    threads: int | None = None,
    max_image_pixels: Any = DEFAULT,
    providers: Any = None,
    device: str | None = None,
    fallback_model: str | os.PathLike[str] | None = None,
    fallback_margin: float | None = None,
    stop: StopEvent | None = None,
    listening: Callable[[str, int], object] | None = None,
) -> None:
    """Serve ``model`` (an exported .onnx file) on ``host:port`` until SIGTERM, Ctrl-C or ``stop``.

    Called from the main thread, it handles SIGTERM while it serves (the handler before is put
    back when it returns).  Python delivers signals to the main thread only: from another
    thread, set ``stop`` (a :class:`threading.Event`, or anything with ``is_set()``) to end it.
    Either way the requests in flight are answered first.

    ``port=0`` takes any free port; a line on stdout says which once the server answers, and
    ``listening(host, port)`` is called then (``host`` as an IP address; the server answers
    requests meanwhile, so the callback may call it).  What ``listening`` raises stops the server
    and ``serve`` raises it.
    ``name``: the model's name in ``/v2/models/{name}`` (default: the file's stem).
    ``max_batch``, ``max_wait_ms``, ``max_queue``, ``max_body_bytes``: the batching and
    admission limits (None: the server's defaults, docs/serving.md).  ``threads``,
    ``max_image_pixels``, ``providers``, ``device``, ``fallback_model`` and ``fallback_margin``
    as for :class:`butterfly_onnx.Classifier` (its rust backend: a provider that is missing is a
    ``BackendUnavailableError``, never a silent fallback; the near-tie fallback answers in the
    batcher, from the rows it batched).
    """
    from ._backends import check_fallback_arguments
    from ._backends.providers import resolve_providers
    from ._backends.rust import Backend
    from .images import pixel_limit_default

    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int from 0 to 65535, got {port!r}")
    if max_wait_ms is not None and (
        isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, int) or max_wait_ms < 0
    ):
        raise InvalidArgumentError(f"max_wait_ms must be an int >= 0 or None, got {max_wait_ms!r}")
    limits = {
        key: _positive(key, value)
        for key, value in (
            ("max_batch", max_batch),
            ("max_queue", max_queue),
            ("max_body_bytes", max_body_bytes),
        )
    }
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise InvalidArgumentTypeError(f"stop must be a threading.Event (with is_set()) or None, got {stop!r}")
    if listening is not None and not callable(listening):
        raise InvalidArgumentTypeError(f"listening must be a callable (host, port) or None, got {listening!r}")
    if max_image_pixels is DEFAULT:
        max_image_pixels = pixel_limit_default()
    else:
        max_image_pixels = _positive("max_image_pixels", max_image_pixels)
    settings: dict[str, Any] = dict(
        threads=threads,
        labels=None,
        preprocess=None,
        max_image_pixels=max_image_pixels,
        providers=resolve_providers(providers, device),
    )
    fallback_margin = check_fallback_arguments(fallback_model, fallback_margin, str(model))
    if fallback_model is not None:
        settings.update(fallback=Backend(Path(os.fspath(fallback_model)), **settings), fallback_margin=fallback_margin)
    backend = Backend(Path(os.fspath(model)), **settings)
    try:
        with _sigterm_stops_serving():
            backend.serve(
                host=host,
                port=port,
                name=name,
                max_batch=limits["max_batch"],
                max_wait_ms=max_wait_ms,
                max_queue=limits["max_queue"],
                max_body_bytes=limits["max_body_bytes"],
                stop=None if stop is None else stop.is_set,
                listening=listening,
            )
    except (KeyboardInterrupt, _Terminated):  # the server has already stopped gracefully
        pass
