"""File output and checked input.

Output is atomic: write to a temporary name in the same folder, then rename, so a crash (or Ctrl-C)
mid-write never leaves a partial file or folder looking complete. The temporary names are created
private (``mkstemp``: 0600, ``mkdtemp``: 0700); before the rename they get the mode an ordinary
``open``/``mkdir`` would give under the process umask, so a shared run folder stays readable by the
people the umask lets in.

Input is checked: ``read_json`` and ``load_safetensors`` raise a ``ValueError`` that names the file
and the fix, instead of a bare ``JSONDecodeError`` or ``SafetensorError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "as_os_error",
    "safetensors_os_errors",
    "save_tensors",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_umask",
    "follow_umask",
    "fsync_path",
    "load_safetensors",
    "load_safetensors_into",
    "read_json",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc where possible; ``os.umask`` cannot read without setting)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # set-and-restore is not atomic across threads; serialise it at least here
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _file_mode() -> int:
    return 0o666 & ~current_umask()


def _dir_mode() -> int:
    return 0o777 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename (mode from the umask).

    ``durable``: also fsync the file before the rename and the folder after it, so the new content survives a
    power cut once this returns (what a server's snapshot pointer needs; a crash of the process alone never
    loses a completed rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_path(path.parent)


def fsync_path(path: str | os.PathLike) -> None:
    """``fsync`` a file or a folder (a folder's entries: renames and new files in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` whole (mode from the umask).

    On error the temporary folder is removed and an existing ``path`` is left untouched. The replacement is
    one atomic swap where Linux offers it (``renameat2``), so a crash at any moment leaves ``path`` holding the
    old folder or the new one, complete; elsewhere two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        follow_umask(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() and _exchange(tmp, path):  # one atomic swap: ``path`` is the old or the new folder, always
        shutil.rmtree(tmp, ignore_errors=True)  # (it now holds the old one)
        return
    old = None
    if path.exists():  # no renameat2 here: two renames, and a window in which ``path`` is missing
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # an old kernel or a file system without it
    raise OSError(err, os.strerror(err), str(b))


def follow_umask(path: str | os.PathLike) -> None:
    """Give the file ``path``, or the folder and everything in it, the mode an ordinary ``open``/``mkdir``
    gets under the umask.

    Libraries do not all follow it: safetensors (0.8) writes every file 0600 whatever the umask, so a
    teammate could not load a model from a shared run folder. Every sidrec output passes through this
    (``atomic_dir``, the training states, each safetensors file written) before it is published."""
    file_mode, dir_mode = _file_mode(), _dir_mode()
    if not os.path.isdir(path):
        os.chmod(path, file_mode)
        return
    folder = path
    for root, dirs, files in os.walk(folder):  # links are left alone: chmod would change what they point to
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), file_mode)
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), dir_mode)
    os.chmod(folder, dir_mode)


def read_json(path: str | os.PathLike, *, fix: str = "restore the file or rerun the stage that wrote it") -> Any:
    """Parse a JSON file; ``ValueError`` naming the file (missing, unreadable, not UTF-8, not JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path} not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({e}); {fix}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is damaged: {fix}") from e


def _safetensors_error(path: Path, e: Exception, fix: str) -> ValueError:
    if not os.access(path, os.R_OK):  # a teammate's file without read permission is not a damaged file
        return ValueError(f"{path} cannot be loaded: permission denied (mode {oct(path.stat().st_mode & 0o777)}); "
                          "ask its owner to make the run folder readable (`chmod -R a+rX FOLDER`)")
    return ValueError(f"{path} cannot be loaded ({type(e).__name__}: {e}); the file is truncated or damaged: {fix}")


def load_safetensors(path: str | os.PathLike, *, device: str = "cpu",
                     fix: str = "restore the file or rerun the stage that wrote it") -> dict[str, Any]:
    """``safetensors.torch.load_file`` with errors that name the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found; {fix}")
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # SafetensorError, OSError, ...: the library's types vary by version
        raise _safetensors_error(path, e, fix) from e


def load_safetensors_into(model: Any, path: str | os.PathLike, *, strict: bool = False,
                          fix: str = "restore the file or rerun the stage that wrote it") -> tuple[list[str], list[str]]:
    """``safetensors.torch.load_model`` (missing and unexpected keys) with errors that name the file."""
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found; {fix}")
    try:
        missing, unexpected = load_model(model, str(path), strict=strict)
    except RuntimeError as e:  # shape mismatch from load_state_dict: the file and the config disagree
        if "size mismatch" in str(e):
            raise ValueError(f"{path} does not match the model its config.json describes ({e}); the folder "
                             "mixes files from different models") from e
        raise _safetensors_error(path, e, fix) from e
    except Exception as e:
        raise _safetensors_error(path, e, fix) from e
    return list(missing), list(unexpected)


def as_os_error(error: BaseException, path: str | os.PathLike | None = None) -> OSError | None:
    """``error`` as the ``OSError`` it is: itself, or safetensors' ``SafetensorError`` for an I/O failure ("...
    No space left on device (os error 28)"), which is not an ``OSError``; None for anything else."""
    if isinstance(error, OSError):
        return error
    if type(error).__name__ == "SafetensorError" and (m := re.search(r"os error (\d+)", str(error))):
        code = int(m.group(1))
        return OSError(code, os.strerror(code), None if path is None else str(path))
    return None


def save_tensors(tensors: dict[str, Any], path: str | os.PathLike, *, named: str | os.PathLike | None = None) -> None:
    """The one way sidrec writes a ``.safetensors`` file of plain tensors: contiguous CPU copies, a full disk
    as an ``OSError`` naming ``named`` (the published path, when ``path`` is inside a temporary folder), and
    the umask's mode (safetensors writes 0600 whatever the umask)."""
    from safetensors.torch import save_file

    with safetensors_os_errors(named or path):
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    follow_umask(path)


@contextlib.contextmanager
def safetensors_os_errors(path: str | os.PathLike) -> Iterator[None]:
    """Around a safetensors write: a full disk or a file-size limit raises ``OSError`` naming ``path`` (found
    on a real full tmpfs), so callers and the CLI handle it like every other write."""
    try:
        yield
    except Exception as e:
        converted = as_os_error(e, path)
        if converted is None or converted is e:
            raise
        raise converted from e
