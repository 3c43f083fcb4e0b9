"""Zip deliveries, extracted safely.

No member may land outside the target folder (zip-slip); size and compression-ratio caps refuse zip bombs before
anything is written, and the bytes actually written are counted while streaming, since the central directory can
lie. A member that cannot be extracted (password-protected, corrupt, an unsupported compression method, a name
that the file system cannot hold or that clashes with another member's, a link, a zip nested too deep) is refused
on its own, with a reason, and the other members are extracted. Only a defect of the archive as a whole (not a
readable zip, a bomb, too many members, nothing in it) refuses the archive.

Zips inside the archive are expanded here too, up to MAX_DEPTH levels, into a folder of the zip's own name, under
one budget of bytes for the whole delivery."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import zipfile
from typing import NamedTuple

from ..core.errors import InputError
from ..core.outputs import atomic

MAX_TOTAL = 50 * 2**30  # bytes extracted from one archive, nested zips included
MAX_RATIO = 200  # uncompressed / compressed, per member of more than 1 MiB and for the archive (LAZ barely compresses)
MEMBER_RATIO_FLOOR = 2**20  # a member this small is not checked for its own ratio...
RATIO_FLOOR = 16 * 2**20  # ...and an archive may always expand to this many bytes, whatever its ratio
MAX_MEMBERS = 100_000
MAX_DEPTH = 2  # zips within the delivery's zip may hold zips; a zip nested deeper is refused
CHUNK = 1 << 20
_KEY_VERSION = 2  # part of the cache key: a change of the extraction rules re-extracts
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
if zipfile.bz2 is not None:
    _METHODS[zipfile.ZIP_BZIP2] = "bzip2"
if zipfile.lzma is not None:
    _METHODS[zipfile.ZIP_LZMA] = "LZMA"
_METHOD_NAMES = {1: "shrink", 2: "reduce", 3: "reduce", 4: "reduce", 5: "reduce", 6: "implode", 9: "Deflate64",
                 10: "PKWARE implode", 12: "bzip2", 14: "LZMA", 18: "IBM TERSE", 19: "IBM LZ77", 93: "Zstandard",
                 94: "MP3", 95: "xz", 96: "JPEG", 97: "WavPack", 98: "PPMd", 99: "AES encryption"}
_DRIVE = re.compile(r"^[A-Za-z]:")


class Extraction(NamedTuple):
    """What extract_zip made: the folder holding the extracted members, and one InputError per member not extracted
    (its .path is the archive given, its .member the member's name inside the delivery, its str names both and
    says why). Path-like: os.fspath() and str() give the folder."""
    folder: str
    refused: list

    def __fspath__(self) -> str:
        return self.folder

    def __str__(self) -> str:
        return self.folder


class _Refusal(Exception):
    """One member is not extracted."""

    def __init__(self, code: str, why: str):
        super().__init__(why)
        self.code, self.why = code, why


class _ArchiveRefused(Exception):
    """The archive as a whole is refused (for a nested zip: that member of the outer archive)."""

    def __init__(self, code: str, what: str):
        super().__init__(what)
        self.code, self.what = code, what


class _Budget:
    """Bytes that may still be written for one delivery (shared by its nested zips), counted as written."""

    def __init__(self, limit: int):
        self.limit, self.written = limit, 0


def member_refusal(archive, member: str, code: str, why: str) -> InputError:
    e = InputError(archive, code, f"member {member!r} {why}")
    e.member = member
    return e


def _limits(root: str) -> tuple[int, int]:
    try:
        return os.pathconf(root, "PC_NAME_MAX"), os.pathconf(root, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 255, 4096


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, or _Refusal. Backslashes count as separators (zips made on Windows);
    only a component that is exactly '..', an absolute path or a drive letter is a traversal: '..good.las' is a
    name like any other."""
    s = name.replace("\\", "/")
    parts = tuple(p for p in s.split("/") if p not in ("", "."))
    if s.startswith("/") or ".." in parts or (parts and _DRIVE.match(parts[0])):
        raise _Refusal("zip-slip", "would be written outside the extraction folder (an absolute path, a drive "
                                   "letter or a '..' component); not extracted")
    if not parts or any(ord(c) < 32 or c == "\x7f" for p in parts for c in p):
        raise _Refusal("zip-bad-name", "has an empty name or control characters in its name; not extracted")
    return parts


def _check_lengths(parts: tuple, out_dir: str, name_max: int, path_max: int) -> None:
    for p in parts:
        n = len(os.fsencode(p))
        if n > name_max:
            raise _Refusal("zip-name-too-long", f"has a name part of {n} bytes, over the file system's limit of "
                                                f"{name_max}; not extracted")
    n = len(os.fsencode(os.path.join(out_dir, *parts)))
    if n >= path_max:
        raise _Refusal("zip-name-too-long", f"would be extracted to a path of {n} bytes, over the file system's "
                                            f"limit of {path_max}; not extracted")


def _encrypted() -> _Refusal:
    return _Refusal("zip-encrypted", "is password-protected (encrypted); pcpipe takes no passwords: deliver it "
                                     "unencrypted")


def _member_problem(info: zipfile.ZipInfo) -> _Refusal | None:
    """What makes one member unreadable, from the central directory alone."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return _Refusal("zip-symlink", "is a symbolic link; not extracted")
    if info.create_system == 3 and stat.S_IFMT(mode) in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        return _Refusal("zip-special", "is a device, pipe or socket entry, not a file; not extracted")
    if info.flag_bits & 0x41 or info.compress_type == 99:  # traditional or strong encryption, or AES
        return _encrypted()
    if info.compress_type not in _METHODS:
        name = _METHOD_NAMES.get(info.compress_type, "unknown")
        return _Refusal("zip-method", f"is compressed with method {info.compress_type} ({name}), which is not read "
                                      f"here (only {', '.join(_METHODS.values())}); re-zip it with deflate")
    return None


def _read_error(e: BaseException) -> _Refusal:
    text = str(e)
    if isinstance(e, RuntimeError) and "encrypted" in text:
        return _encrypted()
    if isinstance(e, NotImplementedError) or (isinstance(e, RuntimeError) and "missing" in text):  # no decoder
        return _Refusal("zip-method", "is compressed with a method that is not read here; re-zip it with deflate")
    if isinstance(e, zipfile.BadZipFile) and "CRC" in text:
        return _Refusal("zip-bad-crc", "is corrupt: its data do not match the CRC-32 checksum the archive "
                                       "records; not extracted (ask for the archive again)")
    return _Refusal("zip-corrupt", "is corrupt: its header or compressed data cannot be decoded (a damaged or "
                                   "truncated archive); not extracted")


def _chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo):
    """The member's bytes; any failure to read or decode them is the member's defect (_Refusal)."""
    try:
        with zf.open(info) as src:
            while chunk := src.read(CHUNK):
                yield chunk
    except Exception as e:  # noqa: BLE001 - whatever the decoder raises, the member's bytes are bad
        raise _read_error(e) from None


def _write_error(e: OSError) -> _Refusal | None:
    """The member's name as the file system refuses it, or None: no space or no permission is not a defect of the
    input, and is raised as it is."""
    if e.errno == errno.ENAMETOOLONG:
        return _Refusal("zip-name-too-long", "has a name too long for the file system; not extracted")
    if e.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return _Refusal("zip-name-clash", "has the name of another member's file or folder (on this file system); "
                                          "not extracted")
    if e.errno in (errno.EILSEQ, errno.EINVAL):
        return _Refusal("zip-bad-name", "has a name this file system cannot hold; not extracted")
    return None


class _OverBudget(_ArchiveRefused):
    """More bytes came out than the delivery's budget while streaming: the whole delivery is refused."""


def _copy(zf, info, target: str, budget: _Budget) -> None:
    n, created = 0, False
    try:
        with open(target, "xb") as out:  # never over another member's file
            created = True
            for chunk in _chunks(zf, info):
                n += len(chunk)
                budget.written += len(chunk)
                if n > info.file_size:
                    raise _Refusal("zip-bomb", f"expands past its declared size of {info.file_size:,} bytes; not "
                                               f"extracted")
                if budget.written > budget.limit:
                    raise _OverBudget("zip-bomb", f"expands past {budget.limit:,} bytes while extracting, more "
                                                  f"than its directory declares; refused")
                out.write(chunk)
    except BaseException:
        if created:
            try:
                os.remove(target)
            except OSError:
                pass
        raise


def _open(path: str) -> zipfile.ZipFile:
    try:
        with open(path, "rb") as fh:
            end = zipfile._EndRecData(fh)  # the member count, before the directory is parsed into memory
        if end and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:
            raise _ArchiveRefused("zip-too-many", f"lists {end[zipfile._ECD_ENTRIES_TOTAL]:,} members, over the "
                                                  f"limit of {MAX_MEMBERS:,}; refused")
    except (AttributeError, IndexError, TypeError, ValueError, OSError):
        pass  # no such private helper, or an unreadable end record: ZipFile says what is wrong below
    try:
        return zipfile.ZipFile(path)
    except Exception:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, UnicodeDecodeError... all one defect
        raise _ArchiveRefused("bad-zip", "not a readable zip archive (its directory is missing, damaged or "
                                         "truncated); refused") from None


def _key(path: str, zf: zipfile.ZipFile, caps: tuple) -> str:
    """Cache key of an extraction: the archive's size and modification time and every member's name, CRC-32,
    sizes, method, flags and offset as the central directory lists them (cheap, and it changes whenever content
    does), with the caps and the rules' version."""
    st = os.stat(path)
    rows = [(i.filename, i.CRC, i.file_size, i.compress_size, i.compress_type, i.flag_bits, i.external_attr,
             i.header_offset) for i in zf.infolist()]
    doc = json.dumps([_KEY_VERSION, st.st_size, st.st_mtime_ns, caps, rows], ensure_ascii=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def _extract(path: str, out_dir: str, label: str, depth: int, budget: _Budget, max_ratio: float,
             max_depth: int, scratch: str, zf: zipfile.ZipFile | None = None) -> list[tuple[str, str, str]]:
    """Extract the archive at `path` into the new folder out_dir; return (member, code, why) for every member not
    extracted (member names prefixed with `label`). Raises _ArchiveRefused before writing anything when the
    archive as a whole is refused."""
    own = zf is None
    if own:
        zf = _open(path)
    try:
        return _extract_open(zf, path, out_dir, label, depth, budget, max_ratio, max_depth, scratch)
    finally:
        if own:
            zf.close()


def _extract_open(zf, path, out_dir, label, depth, budget, max_ratio, max_depth, scratch):
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _ArchiveRefused("zip-too-many", f"lists {len(infos):,} members, over the limit of {MAX_MEMBERS:,}; "
                                              f"refused")
    name_max, path_max = _limits(os.path.dirname(out_dir))
    refused: list[tuple[str, str, str]] = []
    ok: list[tuple[int, zipfile.ZipInfo, tuple, bool]] = []  # (listing index, member, path parts, is a folder)
    files: dict[tuple, list[tuple[int, zipfile.ZipInfo]]] = {}
    folders: dict[tuple, str] = {}  # folder path parts -> a member that makes it a folder
    for k, info in enumerate(infos):
        if info.filename.endswith(("/", "\\")) and all(c in ("", ".") for c in re.split(r"[/\\]", info.filename)):
            continue  # './' or '/': the archive's own top folder
        try:
            parts = _parts(info.filename)
            _check_lengths(parts, out_dir, name_max, path_max)
        except _Refusal as r:
            refused.append((label + info.filename, r.code, r.why))
            continue
        is_dir = info.filename.replace("\\", "/").endswith("/")
        for j in range(1, len(parts) + is_dir):
            folders.setdefault(parts[:j], info.filename)
        if is_dir:
            ok.append((k, info, parts, True))
        else:
            files.setdefault(parts, []).append((k, info))
    for parts, same in files.items():
        k, info = same[0]  # of identical copies, the first
        if parts in folders:
            refused.append((label + info.filename, "zip-name-clash",
                            f"is a file, but other members use it as a folder (e.g. {folders[parts]!r}); it cannot "
                            f"be both: not extracted"))
            continue
        if len({(i.CRC, i.file_size) for _, i in same}) > 1:
            refused.append((label + info.filename, "zip-duplicate", f"appears {len(same)} times in the archive with "
                                                                    f"different content; no copy is taken"))
            continue
        problem = _member_problem(info)
        if problem is None and parts[-1].lower().endswith(".zip") and depth + 1 > max_depth:
            problem = _Refusal("zip-nesting", f"is a zip nested {depth + 1} levels deep in the delivery, past the "
                                              f"nesting depth limit of {max_depth} (zips within zips); not extracted")
        if problem is not None:
            refused.append((label + info.filename, problem.code, problem.why))
            continue
        ok.append((k, info, parts, False))
    ok.sort(key=lambda t: t[0])  # the archive's order
    if not refused and all(is_dir for *_, is_dir in ok):
        raise _ArchiveRefused("zip-empty", "holds no files; refused")
    size = os.path.getsize(path)
    total = 0
    for _, info, _, _ in ok:
        if info.file_size > MEMBER_RATIO_FLOOR and info.file_size > max_ratio * max(info.compress_size, 1):
            raise _ArchiveRefused("zip-bomb", f"member {info.filename!r} expands {info.file_size:,} bytes from "
                                              f"{info.compress_size:,} (ratio over {max_ratio}); refused")
        total += info.file_size
    if total > max(max_ratio * size, RATIO_FLOOR):
        raise _ArchiveRefused("zip-bomb", f"would expand to {total:,} bytes from {size:,} (ratio "
                                          f"{total / max(size, 1):,.0f}, over {max_ratio}); refused")
    if total > budget.limit - budget.written:
        raise _ArchiveRefused("zip-bomb", f"would expand to {total:,} bytes, over the cap of {budget.limit:,} for "
                                          f"the delivery; refused")
    os.makedirs(out_dir, exist_ok=False)
    for _, info, parts, is_dir in ok:
        target = os.path.join(out_dir, *parts)
        try:
            try:
                if is_dir:
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if parts[-1].lower().endswith(".zip"):
                    refused += _nested(zf, info, target, label + info.filename, depth, budget, max_ratio, max_depth,
                                       scratch)
                else:
                    _copy(zf, info, target, budget)
            except OSError as e:
                r = _write_error(e)
                if r is None:
                    raise
                raise r from None
        except _Refusal as r:
            refused.append((label + info.filename, r.code, r.why))
    return refused


def _nested(zf, info, target, label, depth, budget, max_ratio, max_depth, scratch):
    """A zip member: written to scratch, then expanded into a folder of its own name at `target`."""
    os.makedirs(scratch, exist_ok=True)
    inner = os.path.join(scratch, f"{len(os.listdir(scratch))}-{budget.written}.zip")
    try:
        _copy(zf, info, inner, budget)
        try:
            return _extract(inner, target, label + "/", depth + 1, budget, max_ratio, max_depth, scratch)
        except _OverBudget:
            raise
        except _ArchiveRefused as a:
            shutil.rmtree(target, ignore_errors=True)
            raise _Refusal(a.code, f"(a zip in the delivery): {a.what}") from None
    finally:
        if os.path.exists(inner):
            os.remove(inner)


def _folder_name(path: str) -> str:
    """Named after the archive's file name and its absolute path: a zip delivered again at the same place is
    extracted to the same folder (its members keep their paths, and a changed member replaces the old one)."""
    base = os.path.basename(path)[:100]
    return f"{base}-{hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:10]}"


def extract_zip(path, dest_root, max_total: int = MAX_TOTAL, max_ratio: float = MAX_RATIO, *,
                max_depth: int = MAX_DEPTH) -> Extraction:
    """Extract the zip at `path` into a folder under dest_root; return Extraction(folder, refused), refused holding
    an InputError (code zip-*, .member set) for each member not extracted, the others being extracted.

    Raises InputError (bad-zip, zip-bomb, zip-too-many, zip-empty) when the archive as a whole is refused; then
    nothing is written. Every size and ratio is checked before anything is written, and the bytes written are
    counted while streaming, against at most max_total bytes and max_ratio times the archive's size (or
    RATIO_FLOOR) for the delivery with its nested zips.

    The folder is reused while the archive is unchanged (size, modification time and the central directory's
    CRC-32s and sizes of every member); a changed archive is extracted again, replacing the folder."""
    path = str(path)
    dest_root = str(dest_root)
    try:
        zf = _open(path)
    except _ArchiveRefused as a:
        raise InputError(path, a.code, a.what) from None
    with zf:
        dest = os.path.join(dest_root, _folder_name(path))
        marker, tmp, old, scratch = dest + ".json", dest + ".part", dest + ".old", dest + ".nest"
        key = _key(path, zf, (max_total, max_ratio, max_depth, RATIO_FLOOR, MAX_MEMBERS))
        if os.path.isdir(dest):
            try:
                with open(marker, encoding="utf-8") as f:
                    done = json.load(f)
                if done["key"] == key:
                    return Extraction(dest, [member_refusal(path, *r) for r in done["refused"]])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        for stale in (tmp, old, scratch):
            shutil.rmtree(stale, ignore_errors=True)
        os.makedirs(dest_root, exist_ok=True)
        budget = _Budget(min(max_total, max(int(max_ratio * os.path.getsize(path)), RATIO_FLOOR)))
        try:
            refused = _extract(path, tmp, "", 0, budget, max_ratio, max_depth, scratch, zf)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, _ArchiveRefused):
                raise InputError(path, e.code, e.what) from None
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if os.path.exists(marker):
        os.remove(marker)
    if os.path.isdir(dest):
        os.replace(dest, old)
    os.replace(tmp, dest)
    with atomic(marker, "w", encoding="utf-8") as f:
        json.dump({"archive": path, "key": key, "refused": refused}, f, ensure_ascii=False, indent=1)
    shutil.rmtree(old, ignore_errors=True)
    return Extraction(dest, [member_refusal(path, *r) for r in refused])
