"""Atomic, pickle-free artifact I/O.

Everything trade-agent writes goes through these helpers: the bytes land in a temporary
file next to the target and are renamed into place, so a crash or a validation error never
leaves a half-written artifact. Arrays are stored as ``.npz`` written with a fixed zip
timestamp so identical arrays give identical bytes (stable DVC hashes).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trade_agent.errors import UnsafePathError

if TYPE_CHECKING:  # pandas costs a CLI command a quarter second; only Parquet writers pass frames
    import pandas as pd

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# One path component read from an index, an export or a JSON file: no separator, no
# "..", nothing absolute, no hidden or odd names.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@,-]*")


def is_safe_name(name: object) -> bool:
    """A single file or directory name that cannot leave the folder it is joined to."""
    return isinstance(name, str) and _SAFE_NAME.fullmatch(name) is not None and ".." not in name


def is_safe_relative_path(path: object) -> bool:
    """A POSIX relative path (``a/b.json``) made of safe names only."""
    return isinstance(path, str) and all(is_safe_name(part) for part in path.split("/"))


def path_inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused unless it resolves (symlinks followed) inside ``root``.

    Raises:
        UnsafePathError: the path is unsafe or escapes ``root``.
    """
    if not is_safe_relative_path(relative):
        raise UnsafePathError(f"'{relative}' is not a plain relative path; refused to write it under {root}")
    candidate = root / relative
    if not candidate.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"{candidate} resolves outside {root} (a symlink?); refused")
    return candidate


def _current_umask() -> int:
    # os.umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_open_mode(directory: bool = False) -> int:
    """The mode ``open()``/``mkdir()`` gives a new file: 0666/0777 less the umask.

    mkstemp/mkdtemp leave 0600/0700, so a store or outputs shared by the users of one
    machine would become unreadable to all but one. Every atomic write makes a new file,
    so files left at 0600 by earlier versions get the usual mode on their next write.
    """
    return (0o777 if directory else 0o666) & ~_current_umask()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``target``, else delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # the caller may have replaced the file (e.g. a copy onto it)
            os.chmod(tmp, _plain_open_mode())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def new_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden directory in ``parent`` with the mode ``mkdir()`` would give, to be
    renamed into place once complete."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, _plain_open_mode(directory=True))
    return tmp


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` as a whole on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, _plain_open_mode(directory=True))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def canonical_json(obj: Any) -> str:
    """Stable JSON text: sorted keys, no whitespace variation (for hashing)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(path: str | Path, frame: pd.DataFrame) -> Path:
    """Atomically write ``frame`` to Parquet (no index, zstd)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")
    return Path(path)


def host_platform() -> str:
    """The machine an artifact names: OS and architecture (``Linux-x86_64``), never the kernel build,
    which differs between machines that produce identical results and would make DVC outputs
    (and so ``dvc.lock``) machine-specific."""
    return f"{platform.system()}-{platform.machine()}"


def write_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Atomically write arrays to an uncompressed ``.npz`` with deterministic bytes.

    Object arrays are refused: loading them would need pickle.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            array = np.asarray(arrays[name])
            if array.dtype.hasobject:
                raise TypeError(f"array '{name}' has dtype object; store numbers or strings")
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            archive.writestr(info, buffer.getvalue())
    return Path(path)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` written by :func:`write_npz` (never unpickles)."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_key(settings: Mapping[str, Any], input_files: Sequence[Path] = ()) -> str:
    """Identity of a training run: the content of its input files and the settings that shape it.

    The one key every resumable run names its checkpoint directory by (CNN-LSTM, distributed
    CNN-LSTM, agents, hybrids), so a re-run resumes only a run of the same inputs.
    """
    return sha256_text(canonical_json({"files": [sha256_file(p) for p in input_files], "settings": settings}))[:16]
