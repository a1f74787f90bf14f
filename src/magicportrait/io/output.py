"""The output folder of a run: one run at a time, a result replaced as a whole, nothing left behind on failure.

Python::

    with output_folder("out/") as out:     # lock + writability check now, before minutes of tracking
        ...                                 # the slow work
        with out.stage() as stage:          # a hidden staging folder inside out/ (same file system: renames)
            ...                             # write the files into stage
        # here the new result has replaced the earlier one

- The lock is ``out/.magicportrait.lock``, held with ``flock``: the kernel releases it however the process ends
  (SIGKILL included), so the lock file of a dead run is simply taken over. The file names its holder (pid, host,
  command, start time) for the error a second run gets. Where ``flock`` is not available (Windows, some network file
  systems) the file is created exclusively instead, and one naming a dead process of this host counts as stale.
- Staging folders ``.staging-<pid>-*`` (and ``.replaced-<pid>-*``) left by a killed run are removed by the next run
  that takes the lock: while it holds the lock no live run can own one.
- ``.magicportrait-run.json`` lists the entries the last run wrote. A new result moves exactly those (and any
  same-named ones) aside, moves its own entries in, then deletes the old ones; anything else in the folder (the
  user's own files) is left alone. If a move fails, the earlier result is put back.
- On failure the folder is as it was; folders this run created (the output folder, missing parents) are removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from magicportrait.errors import OutputError
from magicportrait.io.atomic import atomic_path, make_temp_dir

try:
    import fcntl
except ImportError:  # Windows: only the exclusive-create lock
    fcntl = None

logger = logging.getLogger(__name__)
LOCK_NAME = ".magicportrait.lock"
MANIFEST_NAME = ".magicportrait-run.json"
STAGING_PREFIX = ".staging-"
REPLACED_PREFIX = ".replaced-"
MANIFEST_FORMAT, MANIFEST_VERSION = "magicportrait-run", 1
_ACQUIRE_TRIES = 10


# ---------------------------------------------------------------------------------------------------- the lock


class FolderLock:
    """An exclusive lock on a folder, the file ``<folder>/.magicportrait.lock`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_NAME) -> None:
        self.path = Path(folder) / name
        self.kernel_lock = False  # True: held with flock, so no live process can hold it too
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputError` naming the run that holds it."""
        try:
            self._acquire()
        except OSError as exc:
            raise OutputError(f"Cannot write to {self.path.parent}: {exc.strerror or exc}. Choose another output "
                              f"path.") from exc

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding it: a run that opened this file meanwhile notices it is gone (_is_current).
        with suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def _acquire(self) -> None:
        if fcntl is None:
            return self._acquire_exclusive()
        for _ in range(_ACQUIRE_TRIES):  # a holder that lets go removes the file: retry on the new one
            fd, created = _open_lock_file(self.path)
            locked = _try_flock(fd)
            if locked is None:  # e.g. a network file system without locks
                os.close(fd)
                if created:
                    self.path.unlink()
                return self._acquire_exclusive()
            if not locked:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputError(_busy_message(self.path, holder))
            if _is_current(fd, self.path):
                self.kernel_lock = True
                return self._take(fd)
            os.close(fd)
        raise OutputError(f"Could not lock {self.path.parent}: other runs keep taking it. Try again.")

    def _acquire_exclusive(self) -> None:
        for _ in range(_ACQUIRE_TRIES):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                holder = _read_holder_file(self.path)
                if holder is None or not _is_stale(holder):
                    raise OutputError(_busy_message(self.path, holder, exclusive=True)) from None
                _log_take_over(self.path, holder)
                with suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            try:
                return self._take(fd)
            except BaseException:
                with suppress(OSError):
                    self.path.unlink()  # an empty lock file would block every later run
                raise
        raise OutputError(f"Could not lock {self.path.parent}: other runs keep taking it. Try again.")

    def _take(self, fd: int) -> None:
        try:
            earlier = _read_holder(fd)
            if earlier is not None and earlier.get("pid") != os.getpid():
                _log_take_over(self.path, earlier)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(_this_run()).encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """Open (creating if needed) the lock file; also say whether this call created it."""
    while True:  # the file may vanish between the two calls (its holder let go): then create it
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
        except FileExistsError:
            pass
        try:
            return os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            continue


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another open file holds it; None: this file system (or OS) has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP, EINVAL: no lock support here
        return None
    return True


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (the previous holder may have unlinked it meanwhile)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _this_run() -> dict:
    command = " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command[:300],
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _read_holder(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    return _parse_holder(os.read(fd, 4096))


def _read_holder_file(path: Path) -> dict | None:
    try:
        return _parse_holder(path.read_bytes()[:4096])
    except OSError:
        return None


def _parse_holder(data: bytes) -> dict | None:
    try:
        holder = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _describe(holder: dict) -> str:
    return (f"pid {holder['pid']} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")


def _busy_message(lock: Path, holder: dict | None, exclusive: bool = False) -> str:
    who = _describe(holder) if holder is not None else f"its lock file {lock} does not say which"
    message = (f"{lock.parent} is in use by another magicportrait run ({who}). Wait for it to finish, or choose "
               f"another output folder.")
    if exclusive:  # without flock a lock can outlive its run (e.g. one killed on another host)
        message += f" If no such run is going on, delete {lock}."
    return message


def _log_take_over(lock: Path, holder: dict) -> None:
    logger.info("Taking over the lock of %s, left by a run that is no longer running (%s).", lock.parent,
                _describe(holder))


def _is_stale(holder: dict) -> bool:
    """A lock of a process of this host that no longer exists (another host's processes cannot be checked)."""
    return holder.get("host") == socket.gethostname() and not pid_alive(holder["pid"])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when that cannot be told)."""
    if pid <= 0 or os.name == "nt":  # on Windows os.kill(pid, 0) would send Ctrl-C, not check
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


# -------------------------------------------------------------------------------------------- the output folder


class OutputFolder:
    """A locked output folder (from :func:`output_folder`); :meth:`stage` writes a result that replaces the last."""

    def __init__(self, path: Path, lock: FolderLock) -> None:
        self.path = path
        self._lock = lock

    @contextmanager
    def stage(self) -> Iterator[Path]:
        """Yield an empty staging folder; when the block succeeds its entries replace the earlier result."""
        stage = make_temp_dir(self.path, f"{STAGING_PREFIX}{os.getpid()}-")
        try:
            yield stage
            self._replace_with(stage)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def remove_leftovers(self) -> None:
        """Delete the staging folders of runs that were killed (called once the lock is held)."""
        for entry in self.path.iterdir():
            if not entry.name.startswith((STAGING_PREFIX, REPLACED_PREFIX)) or not entry.is_dir():
                continue
            pid = _pid_in_name(entry.name)
            if not self._lock.kernel_lock and pid not in (None, os.getpid()) and pid_alive(pid):
                continue  # without flock the lock alone does not prove that its run is gone
            logger.info("Removing %s: the partial output of a run into %s that was killed.", entry.name, self.path)
            shutil.rmtree(entry, ignore_errors=True)

    def _replace_with(self, stage: Path) -> None:
        new = sorted(entry.name for entry in stage.iterdir())
        earlier = read_manifest(self.path)
        names = sorted(set(new) | set(earlier or ()))
        going = [name for name in names if os.path.lexists(self.path / name)]
        if going:
            shown = ", ".join(going[:6]) + (f" and {len(going) - 6} more" if len(going) > 6 else "")
            logger.info("Replacing the earlier result in %s/ (%s).", self.path, shown)
        try:
            self._swap(stage, new, going, names, earlier)
        except OSError as exc:
            raise OutputError(f"Could not move the new result into {self.path}: {exc}. The earlier result (if any) "
                              f"was kept.") from exc
        try:
            self._write_manifest(new, complete=True)
        except OSError as exc:
            logger.warning("Could not update %s (%s); the next run into it replaces all the entries it lists.",
                           self.path / MANIFEST_NAME, exc)

    def _swap(self, stage: Path, new: list[str], going: list[str], names: list[str],
              earlier: list[str] | None) -> None:
        """Move ``going`` aside, ``new`` in, then delete the old entries; on failure put everything back."""
        # Written first, so that a run killed during the moves below still has all its entries removed next time.
        self._write_manifest(names, complete=False)
        trash = None
        try:
            trash = make_temp_dir(self.path, f"{REPLACED_PREFIX}{os.getpid()}-")
            old = _move_all(going, self.path, trash)
            try:
                _move_all(new, stage, self.path)
            except BaseException:
                _move_all(old, trash, self.path)
                raise
        except BaseException:
            self._restore_manifest(earlier)
            if trash is not None:
                with suppress(OSError):
                    trash.rmdir()  # only when empty: an entry that could not be put back is not deleted
            raise
        shutil.rmtree(trash, ignore_errors=True)

    def _write_manifest(self, entries: list[str], complete: bool) -> None:
        record = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "entries": entries, "complete": complete,
                  **_this_run(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        del record["started"]  # that of the lock, not of the run: not known here
        with atomic_path(self.path / MANIFEST_NAME) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")

    def _restore_manifest(self, earlier: list[str] | None) -> None:
        if earlier is None:
            with suppress(OSError):
                (self.path / MANIFEST_NAME).unlink()
        else:
            with suppress(OSError):
                self._write_manifest(earlier, complete=True)


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[OutputFolder]:
    """Create (if needed) and lock the output folder ``path`` for a run; see the module docstring.

    Raises :class:`OutputError` at once when the folder cannot be written or another run holds it. When the block
    fails, folders this call created are removed again, so no empty output folder is left behind.
    """
    path = Path(path)
    created = _make_folder(path)
    lock = FolderLock(path)
    try:
        lock.acquire()
    except BaseException:
        _remove_empty(created)
        raise
    succeeded = False
    try:
        folder = OutputFolder(path, lock)
        folder.remove_leftovers()
        yield folder
        succeeded = True
    finally:
        lock.release()
        if not succeeded:
            _remove_empty(created)


def read_manifest(folder: str | os.PathLike) -> list[str] | None:
    """The entries the last run wrote into ``folder`` (its ``.magicportrait-run.json``), or None without one."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        entries = record["entries"]
        if record.get("format") != MANIFEST_FORMAT or not isinstance(entries, list):
            raise ValueError("not a run record")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s is unreadable (%s); only entries with the new result's names are replaced.", path, exc)
        return None
    if record.get("complete") is False:
        logger.warning("The earlier run into %s was killed while moving its result in; all of it is replaced now.",
                       folder)
    return [name for name in entries if _is_entry_name(name)]


def _is_entry_name(name: object) -> bool:
    """A plain name directly inside the folder, not one of this module's own files (a record cannot point out)."""
    return (isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "/" not in name
            and "\\" not in name and name not in (LOCK_NAME, MANIFEST_NAME)
            and not name.startswith((STAGING_PREFIX, REPLACED_PREFIX)))


def _move_all(names: list[str], source: Path, target: Path) -> list[str]:
    """Rename ``source/name`` to ``target/name`` for each name; on failure undo the ones done, then raise."""
    done: list[str] = []
    try:
        for name in names:
            os.replace(source / name, target / name)
            done.append(name)
    except BaseException:
        for name in reversed(done):
            with suppress(OSError):
                os.replace(target / name, source / name)
        raise
    return done


def _pid_in_name(name: str) -> int | None:
    """The pid in ``.staging-<pid>-<random>`` (None for other names, e.g. those of older versions)."""
    parts = name.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def _make_folder(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; return the ones created, deepest first."""
    missing, folder = [], path
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing)
        raise OutputError(f"Cannot write to {path}: {exc.strerror or exc}. Choose another output path.") from exc
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops at the first that is not empty (someone else wrote there)
        try:
            folder.rmdir()
        except OSError:
            break
