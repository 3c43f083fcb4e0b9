"""Zip deliveries, extracted safely: no member may land outside the target folder (zip-slip), and size and
compression-ratio caps refuse zip bombs before the disk fills."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile

from ..validate import InputError

MAX_TOTAL = 50 * 2**30  # bytes extracted from one archive
MAX_RATIO = 200  # uncompressed / compressed, per member of more than 1 MiB (LAZ barely compresses further)


def _member_target(root: str, name: str) -> str:
    norm = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(norm) or norm.startswith("..") or ":" in norm.split(os.sep)[0]:
        raise ValueError(norm)
    target = os.path.realpath(os.path.join(root, norm))
    if os.path.commonpath([target, os.path.realpath(root)]) != os.path.realpath(root):
        raise ValueError(norm)
    return target


def extract_zip(path, dest_root, max_total: int = MAX_TOTAL, max_ratio: float = MAX_RATIO) -> str:
    """Extract `path` into a folder under dest_root named after the archive and its content hash; return it.
    Everything is checked before anything is written; sizes are counted while streaming too, since the
    central directory can lie."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise InputError(path, "bad-zip", f"not a readable zip archive: {e}") from None
    with zf, open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read(1 << 20)).hexdigest()[:10]
        dest = os.path.join(dest_root, f"{os.path.basename(str(path))}-{digest}")
        infos = zf.infolist()
        total = 0
        for info in infos:
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InputError(path, "zip-symlink", f"member {info.filename!r} is a symbolic link; refused")
            try:
                _member_target(dest, info.filename)
            except ValueError:
                raise InputError(path, "zip-slip", f"member {info.filename!r} would be written outside the "
                                                   f"extraction folder; archive refused") from None
            total += info.file_size
            if info.file_size > 2**20 and info.file_size > max_ratio * max(info.compress_size, 1):
                raise InputError(path, "zip-bomb", f"member {info.filename!r} expands {info.file_size:,} bytes from "
                                                   f"{info.compress_size:,} (ratio over {max_ratio}); refused")
        if total > max_total:
            raise InputError(path, "zip-bomb", f"archive would expand to {total:,} bytes, over the cap of "
                                               f"{max_total:,}; refused")
        if os.path.isdir(dest):
            return dest  # same archive content already extracted
        tmp = dest + ".part"
        shutil.rmtree(tmp, ignore_errors=True)
        written = 0
        try:
            for info in infos:
                target = _member_target(tmp, info.filename)
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    n = 0
                    while chunk := src.read(1 << 20):
                        n += len(chunk)
                        written += len(chunk)
                        if n > info.file_size or written > max_total:
                            raise InputError(path, "zip-bomb", f"member {info.filename!r} expands past its declared "
                                                               f"size; refused")
                        out.write(chunk)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.replace(tmp, dest)
        return dest
