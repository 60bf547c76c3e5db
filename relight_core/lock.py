"""One writer per output folder: a lock file (`layout.lock_file`) that a run holds while it writes there.

The lock records its owner's pid, host and process start time. A second run (CLI, worker, Blender) that
finds a live owner stops with one sentence (UserError, exit 2). A lock whose owner is gone (killed, the
machine restarted, the pid reused by another program) is stale and taken over. A lock of another host is
respected unless it is older than `FOREIGN_STALE_S` (that host cannot be asked). The lock is removed when
the run ends, also on errors and Ctrl-C; a SIGKILL leaves it behind, stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from relight_core.errors import UserError

FOREIGN_STALE_S = 24 * 3600.0


def _start_time(pid: int) -> str | None:
    """The kernel's start time of process `pid` (Linux, clock ticks since boot), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    """True when process `pid` runs and (where known) is the one that started at `started`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    now = _start_time(pid)
    return started is None or now is None or now == started


def process_alive(pid: int) -> bool:
    """True when a process `pid` runs on this machine (any owner)."""
    return _alive(pid, None)


def owner_record() -> dict:
    """This process as a lock owner: pid, host, start time, wall-clock time."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _start_time(pid), "time": time.time()}


def _is_stale(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return time.time() - float(owner.get("time") or 0.0) > FOREIGN_STALE_S
    try:
        return not _alive(int(owner["pid"]), owner.get("started"))
    except (KeyError, TypeError, ValueError):
        return True


def _read_owner(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as stale (its writer died between create and write)


def acquire(path: Path, folder: Path) -> dict:
    """Create the lock file `path` for this process -> the owner record written; UserError naming the
    folder and its owner when a live run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = owner_record()
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is None:
                continue  # released meanwhile
            if owner and not _is_stale(owner):
                raise UserError(f"Output folder {folder} is in use by another run (process "
                                f"{owner.get('pid')} on {owner.get('host')}); wait for it to finish or "
                                "choose another --out.") from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        return me
    raise UserError(f"Output folder {folder} is being taken by several runs at once; start one run only.")


def release(path: Path, me: dict) -> None:
    """Remove the lock file when it is still ours."""
    owner = _read_owner(path)
    if owner is not None and owner.get("pid") == me["pid"] and owner.get("host") == me["host"]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def hold(folder: str | os.PathLike, name: str = "lock") -> Iterator[dict]:
    """Hold the output folder's lock (DIR/.relight/<name>) for the block (`acquire` ... `release`)."""
    from relight_core import layout

    folder = Path(folder)
    path = layout.engine_dir(folder) / name
    me = acquire(path, folder)
    try:
        yield me
    finally:
        release(path, me)
