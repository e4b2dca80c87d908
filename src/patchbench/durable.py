"""Crash-consistent files: what a kill, a full disk or a second process can and cannot do to a run.

The rules every writer of a run or study folder follows:

- A file is complete or absent. `atomic_write_text` writes a temporary sibling, fsyncs it and renames
  it over the target (a rename within a folder is atomic on POSIX); a checkpoint folder is built the
  same way (engine/checkpoint.py). Temporaries carry a `.tmp` in their name and are removed on start.
- An append-only log (metrics.jsonl) may lose its torn last line to a kill; `repair_jsonl` cuts the log
  back to its last complete row before anything is appended again.
- JSON is strict: `dumps_strict` writes a non-finite float (NaN, ±Infinity) as null, which every JSON
  reader accepts (Python's json module would write bare NaN, which strict readers reject).
- One writer per folder: `FolderLock` holds an OS lock (fcntl.flock) on FOLDER/.lock for the life of
  the process. The kernel drops it when the process dies, however it dies, so a stale lock never blocks.

Imports only the standard library and errors.py, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from patchbench.errors import ConfigError

LOCK_NAME = ".lock"


# --------------------------------------------------------------------------------------------------
# complete-or-absent files


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) content to disk; a failure is the caller's to handle."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fsync_path(path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Readers (and a crash) see the old content or the new one, never a part of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half file behind
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what an interrupted writer left in `folder` (`.NAME.tmpPID` files and folders, `.NAME.oldPID`)."""
    import shutil

    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and (".tmp" in p.name or ".old" in p.name) and p.name != LOCK_NAME:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# --------------------------------------------------------------------------------------------------
# strict JSON, append-only logs


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """json.dumps that never writes NaN/Infinity: a non-finite float becomes null."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """The complete rows of an append-only JSON-lines log, and how many bytes follow them (a torn tail:
    an unterminated or unparsable line, and everything after it)."""
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    rows, good = [], 0
    while good < len(data):
        end = data.find(b"\n", good)
        if end < 0:
            break  # the last line has no newline: the writer died in the middle of it
        line = data[good:end]
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                break
            if not isinstance(row, dict):
                break
            rows.append(row)
        good = end + 1
    return rows, len(data) - good


def repair_jsonl(path: Path) -> tuple[list[dict], int]:
    """Cut a torn tail off `path` (in place, durably); returns the complete rows and the bytes cut."""
    rows, torn = read_jsonl(path)
    if torn:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - torn)
            f.flush()
            os.fsync(f.fileno())
    return rows, torn


# --------------------------------------------------------------------------------------------------
# one writer per folder


class FolderLock:
    """An exclusive OS lock on FOLDER/.lock, held until `release()` (or the process ends).

    A second process that asks for the same folder gets a ConfigError naming the holder's pid. The lock
    is advisory and per open file (flock), so it is inherited by no child process we start and vanishes
    with its holder: a folder left by a killed process is free again at once."""

    def __init__(self, folder: Path, what: str):
        import fcntl

        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(self.fd, 64, 0).decode().strip()
            os.close(self.fd)
            self.fd = -1
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                by = f" by process {holder}" if holder else ""
                raise ConfigError(f"{what} {str(self.folder)!r} is in use{by} (another patchbench writes there); "
                                  f"wait for it to finish or choose another --out") from None
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1

    def __enter__(self) -> FolderLock:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
