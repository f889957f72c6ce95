"""Small helpers shared by the corpus loaders and the video index (no dependency beyond the standard library)."""

import argparse
import datetime
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any


def walk_once(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(root, followlinks=True)` that enters every real folder once: symbolic links are followed (a video
    collection is often a tree of links), but a folder reached again through a link, or a link loop, is skipped, by
    its device and inode. Sub-folders are visited in sorted order; callers may prune `subdirs` in place, as with
    `os.walk`."""
    seen: set[tuple[int, int]] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        stat = os.stat(directory)
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            subdirs[:] = []
            continue
        seen.add(key)
        subdirs.sort()
        yield directory, subdirs, files


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in blocks (weights and shards may be larger than memory allows at once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """sha256 of a JSON-able value with sorted keys: the same value always gives the same hash."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class FolderLock:
    """An exclusive lock on a folder for the whole of one job (an index build, a training run): a second job waits
    up to `timeout` seconds, then stops with `error(busy)` naming the holder (process, host, start time, command).

    `fcntl.flock` on `lock_file` in the folder: the kernel releases it when the holder exits, even after SIGKILL, so
    a crashed job never leaves a stale lock behind. Needs a POSIX system and a file system with working `flock`
    (local disks; some network file systems do not lock across machines). Subclasses set the three class fields.
    """

    lock_file = ".s2ca.lock"
    error: type[Exception] = RuntimeError
    busy = "{folder} is in use by another process ({holder}){waited}."

    def __init__(self, folder: str, timeout: float = 0.0, poll: float = 0.5):
        self.path = os.path.join(folder, self.lock_file)
        self.timeout = timeout
        self.poll = poll
        self._handle = None

    def acquire(self):
        import fcntl

        handle = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(self.path)
                    handle.close()
                    waited = f" after waiting {self.timeout:g} s" if self.timeout > 0 else ""
                    folder = os.path.dirname(self.path)
                    raise self.error(self.busy.format(folder=folder, holder=holder, waited=waited)) from None
                time.sleep(self.poll)
        handle.seek(0)
        handle.truncate()
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        handle.write(json.dumps(holder) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(path: str) -> str:
    try:
        with open(path) as handle:
            holder = json.loads(handle.readline())
        return f"process {holder['pid']} on {holder['host']} since {holder['since']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


def quiet_weight_loading() -> None:
    """Turns off transformers' "Loading weights" bar: noise on every command (a search loads a model each time);
    the commands' own progress bars are kept (`--quiet` turns those off)."""
    try:
        from transformers.utils import logging
    except ImportError:
        return
    logging.disable_progress_bar()


def first_paragraph(doc: str | None) -> str:
    """A module docstring's first paragraph on one line: a command's `--help` description (its first line alone
    may stop mid-sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` where every long option answers to both spellings, `--top_k` and `--top-k` (the HF
    example scripts write the first, most command-line tools the second): every command of the package takes
    either."""

    def add_argument(self, *names, **kwargs):
        spellings = list(names)
        for name in names:
            if name.startswith("--"):
                for other in ("--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")):
                    if other not in spellings:
                        spellings.append(other)
        return super().add_argument(*spellings, **kwargs)
