"""Every file written for a user goes through :func:`atomic_write` (docs/reliability.md,
'Outputs are atomic'): the data goes to a temporary file in the target's folder, is flushed
and fsynced, and only then takes the target's name.  A crash, a kill, Ctrl-C or a full disk
leaves the previous file byte-identical and no temporary file behind.

On Linux the temporary file is anonymous (``O_TMPFILE``): it has no name until the commit
links it in, so even SIGKILL leaves nothing.  Elsewhere (or on a file system without
``O_TMPFILE``) it is ``.NAME.XXXXXXXX.tmp``, removed on any error or interrupt.  The Rust CLI
does the same (``butterfly_onnx::atomic``)."""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "AtomicFile", "name_the_file"]

# O_TMPFILE refused by the file system or the kernel: fall back to a named temporary file.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.ENOSYS}


def _umask() -> int:
    try:  # Linux >= 4.7: read without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicFile:
    """A temporary file in ``path``'s folder that becomes ``path`` (or another name in the
    same folder) on :meth:`commit`; :meth:`discard` drops it.  Use :func:`atomic_write`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        folder = self.path.parent if str(self.path.parent) else Path(".")
        self._folder = folder
        self._name: str | None = None  # None: anonymous (O_TMPFILE)
        fd = -1
        flag = getattr(os, "O_TMPFILE", 0)
        if flag and os.path.isdir("/proc/self/fd"):
            try:
                fd = os.open(folder, flag | os.O_WRONLY | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE or not folder.is_dir():
                    raise
        if fd < 0:
            fd, self._name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
            os.fchmod(fd, 0o666 & ~_umask())  # as a plain open() would create it
        self.fd = fd
        self.done = False

    def commit(self, path: str | os.PathLike[str] | None = None) -> Path:
        """fsync the data and give it its name (``path``, default the one given at creation;
        it must be in the same folder).  Returns the path written."""
        target = self.path if path is None else Path(path)
        os.fsync(self.fd)
        if self._name is None:
            self._link(target)
        else:
            os.replace(self._name, target)
            self._name = None
        self.done = True
        _fsync_folder(target.parent if str(target.parent) else Path("."))
        return target

    def _link(self, target: Path) -> None:
        """Give the anonymous file the name ``target`` (replacing a file there atomically)."""
        source = f"/proc/self/fd/{self.fd}"
        folder = os.open(target.parent if str(target.parent) else ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            # linkat(..., AT_SYMLINK_FOLLOW): a dir_fd makes Python call linkat, and the /proc
            # link is followed to the open file (plain link() would try to link the symlink).
            try:
                os.link(source, target.name, dst_dir_fd=folder, follow_symlinks=True)
                return
            except FileExistsError:
                pass
            tmp = f".{target.name}.{secrets.token_hex(4)}.tmp"
            os.link(source, tmp, dst_dir_fd=folder, follow_symlinks=True)
            try:
                os.replace(tmp, target.name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=folder)
                except OSError:
                    pass
                raise
        finally:
            os.close(folder)

    def discard(self) -> None:
        """Drop the temporary file (the target is left as it was)."""
        if self._name is not None:
            _unlink(Path(self._name))
            self._name = None


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_folder(folder: Path) -> None:
    try:  # the rename itself durable; best effort (some file systems refuse O_RDONLY dirs)
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    errors: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` when the block ends without
    an exception; on any exception (KeyboardInterrupt included) ``path`` is left as it was
    and the temporary file removed.

    >>> with atomic_write("predictions.csv", newline="") as handle:   # doctest: +SKIP
    ...     handle.write("source,label\\r\\n")
    """
    if "w" not in mode or "+" in mode:
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    atomic = AtomicFile(path)
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": encoding, "newline": newline, "errors": errors}
        with os.fdopen(os.dup(atomic.fd), mode, **kwargs) as handle:
            yield handle
            handle.flush()
        atomic.commit()
    except BaseException as exc:
        atomic.discard()
        name_the_file(exc, atomic.path)
        raise
    finally:
        os.close(atomic.fd)


def name_the_file(exc: BaseException, path: Path) -> None:
    """An OSError from writing (``No space left on device``) names the file it was for."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = os.fspath(path)
