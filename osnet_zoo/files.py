"""Writing files so that a crash never leaves a torn one: the package's one atomic writer.

Every file the package writes (checkpoints, safetensors, JSON, pictures, model cards) goes through
:func:`atomic_path`: the content is written to a temporary file in the destination folder, flushed to disk,
given the permissions a plain ``open()`` would give (the user's umask, not ``mkstemp``'s private 0600), and
renamed over the destination. Readers see the old file or the new one, never half of one; a failed write
leaves no temporary file behind.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
from safetensors.torch import save_file

__all__ = ['FileWriteError', 'describe_write_failure', 'make_folder', 'remove_stale_temporaries', 'atomic_path',
           'atomic_write_bytes', 'atomic_write_text',
           'atomic_write_json', 'atomic_torch_save',
           'atomic_save_safetensors', 'default_file_mode']

PathLike = Union[str, os.PathLike]


def default_file_mode() -> int:
    """The mode ``open(path, 'w')`` would create a file with under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class FileWriteError(OSError):
    """A file that could not be written (a full disk, a quota, a size limit): the message names the file and
    the cause; the previous file, if any, is untouched."""


_WRITE_ERRORS = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is exceeded',
                 errno.EFBIG: 'the file is larger than this process may write (file size limit, ulimit -f)'}
# what libraries that do their own I/O (safetensors) say when the OS refuses a write
_WRITE_ERROR_TEXTS = {os.strerror(code): code for code in _WRITE_ERRORS}


def _failed_errno(error: BaseException) -> Optional[int]:
    seen: Optional[BaseException] = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        for text, code in _WRITE_ERROR_TEXTS.items():
            if text in str(seen):
                return code
        seen = seen.__cause__ or seen.__context__
    return None


def describe_write_failure(error: BaseException, folder: Path) -> str:
    """Why a write failed, in words: the OS error behind a library's own message when there is one."""
    code = _failed_errno(error)
    if code is None:
        return ' '.join(str(error).split())[:200]
    free = shutil.disk_usage(folder).free if folder.is_dir() else None
    return (_WRITE_ERRORS.get(code, os.strerror(code))
            + (f' ({free:,} bytes free in {folder})' if code == errno.ENOSPC and free is not None else '')
            + f' [{errno.errorcode.get(code, code)}]')


def make_folder(folder: PathLike) -> Path:
    """``mkdir -p folder``; a file where a folder of the path should be is a ``NotADirectoryError`` naming it
    (not mkdir's bare FileExistsError)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise NotADirectoryError(f'cannot create the folder {folder}: {blocking} is a file, not a folder.') from None
    return folder


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


# Per folder, the temporary files found the first time this process wrote there: a folder is listed once, not
# at every write (a folder of thousands of figures or shards), and what a later crash leaves is found next run.
_TEMPORARIES: Dict[Path, List[str]] = {}


def remove_stale_temporaries(path: PathLike) -> List[Path]:
    """Delete the temporary files that writers of ``path`` killed mid-write (SIGKILL, power loss) left beside
    it (``.<stem>.<pid>.<random>.tmp<suffix>``, the writer's process gone); returns them. The temporaries of
    a live writer, and those of other files (another rank's shard on another machine), are kept."""
    path = Path(path)
    folder = path.parent
    if folder not in _TEMPORARIES:
        _TEMPORARIES[folder] = [e.name for e in os.scandir(folder) if '.tmp' in e.name] if folder.is_dir() else []
    pattern = re.compile(rf'\.{re.escape(path.stem)}\.(\d+)\.[^.]+\.tmp{re.escape(path.suffix)}')
    removed = []
    for name in _TEMPORARIES[folder]:
        found = pattern.fullmatch(name)
        if found and int(found.group(1)) != os.getpid() and not _process_alive(int(found.group(1))):
            (folder / name).unlink(missing_ok=True)
            removed.append(folder / name)
    _TEMPORARIES[folder] = [n for n in _TEMPORARIES[folder] if folder / n not in removed]
    return removed


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, the file written there
    replaces ``path`` (fsynced, umask permissions). On an exception it is removed and ``path`` is untouched;
    a write the OS refused (full disk, quota, size limit) becomes a :class:`FileWriteError` naming ``path``.

    >>> with atomic_path('model.safetensors') as tmp:
    ...     safetensors.torch.save_file(tensors, str(tmp))
    """
    path = Path(path)
    make_folder(path.parent)
    remove_stale_temporaries(path)
    # keep the suffix: some writers (matplotlib, PIL) pick the format from it; the writer's process id in the
    # name tells a later run whether the writer is gone (killed) and its temporary file stale
    fd, name = tempfile.mkstemp(prefix=f'.{path.stem}.{os.getpid()}.', suffix=f'.tmp{path.suffix}', dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, FileWriteError) or _failed_errno(e) not in _WRITE_ERRORS:
            raise
        raise FileWriteError(f'cannot write {path}: {describe_write_failure(e, path.parent)}; the previous file, '
                             'if any, is unchanged') from e


def atomic_write_bytes(path: PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path: PathLike, data: Any, indent: Optional[int] = 2) -> None:
    """Write ``data`` as JSON (with a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent) + '\n')


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically (for checkpoints that hold tensors and plain values)."""
    # through a Python file object, so a failed write (a full disk) keeps its OSError as the cause
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        torch.save(obj, f)


def atomic_save_safetensors(tensors: Dict[str, torch.Tensor], path: PathLike,
                            metadata: Optional[Dict[str, str]] = None) -> None:
    """Save ``tensors`` (made contiguous) as a safetensors file at ``path`` atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
