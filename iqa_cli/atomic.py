"""Write-then-rename helpers: nothing half-written ever carries a final name.

A temporary file is named `.<final>.<host>.<pid>.<random>.partial` beside its final path. A process
killed with SIGKILL (or by the OOM killer) cannot remove its own, so every later write to the same
final path removes the partial files of dead processes of this host first: a killed `iqa prepare`
leaves no hidden 90 MB file behind for long.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from iqa_cli.errors import ConfigError, DataError, IQAError
from iqa_cli.processes import process_alive
from iqa_cli.stop import raise_if_stopped

PARTIAL_SUFFIX = ".partial"
_UMASK: int | None = None
# A write the file system refused: full, over a quota, or over a file size limit (`ulimit -f`).
WRITE_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Where libraries keep the operating system's errno only in their message: HDF5 (`errno = 28`),
# safetensors (`os error 28`).
_ERRNO_IN_TEXT = re.compile(r"(?:\berrno\s*=\s*|\bos error\s+)(\d+)", re.IGNORECASE)


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"


# Bytes of a file's name kept in the names made beside it (`.<name>.<host>.<pid>.<random>.partial`,
# `.<name>.lock`): with a 64-byte host and a 10-digit pid the longest stays under the 255-byte limit of
# file names, so an output whose own name is long but valid is written, not refused after the work.
NAME_ROOM = 150
_FINAL_OF: dict[str, str] = {}  # this process's temporary files -> the final paths they become


def short_name(name: str) -> str:
    """`name` when it fits `NAME_ROOM` bytes, else its first bytes and a digest of the whole (the same in
    every process, so a later write finds a dead process's partial file of the same output)."""
    raw = os.fsencode(name)
    if len(raw) <= NAME_ROOM:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    return os.fsdecode(raw[: NAME_ROOM - 9]) + "~" + digest


def hidden_beside(path: Path, suffix: str) -> Path:
    """The hidden file `.<name><suffix>` beside `path` (its lock, a resumable partial copy), with the name
    kept to `NAME_ROOM` bytes (`short_name`)."""
    return path.parent / f".{short_name(path.name)}{suffix}"


def stale_partials(final: str | Path) -> list[Path]:
    """Partial files of `final` left by processes of this host that no longer run."""
    final = Path(final)
    prefix, host = f".{short_name(final.name)}.", _host()
    found = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(PARTIAL_SUFFIX)):
            continue
        fields = name[len(prefix) : -len(PARTIAL_SUFFIX)].split(".")
        if len(fields) != 3 or fields[0] != host or not fields[1].isdigit():
            continue  # another host's (a shared file system), or an older naming: not ours to judge
        if not process_alive(int(fields[1])):  # a zombie counts as dead: it writes no more
            found.append(entry)
    return found


def remove_stale_partials(final: str | Path) -> list[Path]:
    removed = []
    for path in stale_partials(final):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


# What a file's first bytes say it is, for the files an output option could overwrite by a slip.
_MAGIC = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (an iqa cache?)"),
    (b"PK\x03\x04", "a zip archive (a .pt checkpoint or an .npz cache?)"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF file (a WebP image?)"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)
TEXT = "a text file"
PNG = "a PNG image written by iqa"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The PNG `Software` text our figures carry: matplotlib's own (plots), or this one (`PNG_SOFTWARE`, the
# distortion preview). A PNG without it may be a photo, and is not replaced.
PNG_SOFTWARE = "iqa"
_OUR_PNG_SOFTWARE = (b"matplotlib", PNG_SOFTWARE.encode())


def _png_software(head: bytes) -> bytes:
    """The `Software` tEXt value among the chunks before the image data (empty if none)."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(head):
        length = int.from_bytes(head[position : position + 4], "big")
        kind = head[position + 4 : position + 8]
        data = head[position + 8 : position + 8 + length]
        if kind == b"IDAT":
            break
        if kind == b"tEXt" and data.startswith(b"Software\x00"):
            return data[len(b"Software\x00") :]
        position += 12 + length
    return b""


def existing_kind(path: Path) -> str | None:
    """None for an empty file, `TEXT` for text, `PNG` for a PNG figure iqa wrote, else what the file is."""
    with open(path, "rb") as handle:
        head = handle.read(8192)
    if not head:
        return None
    if head.startswith(PNG_SIGNATURE):
        software = _png_software(head).lower()
        ours = any(software.startswith(name) for name in _OUR_PNG_SOFTWARE)
        return PNG if ours else "a PNG image iqa did not write (a photo?)"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if len(head) > 8 and head[8:9] == b"{" and b"\x00" in head[:8]:
        return "a safetensors file (a checkpoint?)"
    return TEXT if b"\x00" not in head else "a binary file"


def check_output_file(
    path: str | Path, option: str, *, kind: str | None = None, headers: tuple[str, ...] | None = None
) -> Path:
    """Refuse, before any work, an output file path that cannot be written: an existing folder, a file
    standing where a folder must be, or a folder this user may not write in. Missing folders are fine
    (`atomic_path` makes them). With `kind` (`TEXT` or `PNG`), an existing file is replaced only when it
    is of that kind: `--per-image best.safetensors` or `--csv koniq.h5` is a slip, and would destroy a
    model or a cache. With `headers`, an existing text file is replaced only when its first line starts
    with one of them: a table this option wrote before, not a dataset's score list."""
    given = Path(path).expanduser()
    _check_name_length(given, option)  # first: a stat of such a name fails with an error of its own
    path = write_target(given)
    if path.is_dir():
        raise ConfigError(f"{option}: {given} is a folder; give a file name")
    special = special_file(path)
    if special is not None:  # /dev/null, /dev/stdout, a FIFO: written into, as by a shell's `>`
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{option}: cannot write to {given} ({special}; permission denied)")
        return given
    if kind is not None and path.is_file():
        found = existing_kind(path)
        if found is not None and found != kind:
            raise ConfigError(
                f"{option}: {given} exists and is {found}, not {kind} as this option writes; it is not replaced "
                "(give another name, or remove it first)"
            )
        if found == TEXT and headers is not None:
            with open(path, encoding="utf-8", errors="replace") as handle:
                first = handle.readline().strip()
            if not first.startswith(headers):
                raise ConfigError(
                    f"{option}: {given} exists and is a text file this option did not write (it begins "
                    f"{first[:40]!r}); it is not replaced (give another name, or remove it first)"
                )
    _check_creatable(path.parent, path, option)
    return given


def _nearest_existing(folder: Path) -> Path:
    """`folder`, or the nearest of its parents that exists (a name too long to look up counts as missing)."""
    while folder != folder.parent:
        try:
            if folder.exists():
                break
        except OSError:
            pass
        folder = folder.parent
    return folder


def _check_name_length(path: Path, option: str) -> None:
    """A name longer than its file system takes (255 bytes on most) is refused now, not after the work."""
    ancestor = _nearest_existing(path.parent)
    try:
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf here: the common limit
        limit = 255
    for part in path.relative_to(ancestor).parts:  # the folders still to make, and the file
        size = len(os.fsencode(part))
        if size > limit:
            raise ConfigError(f"{option}: the name {part[:40]!r}... is {size} bytes; names here hold at most {limit}")


def check_output_folder(path: str | Path, option: str) -> Path:
    """`check_output_file` for an output folder (a run folder): an existing file there is refused."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}: {path} is a file; expected a folder")
    _check_creatable(path, path, option)
    return path


def _check_creatable(folder: Path, target: Path, option: str) -> None:
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise ConfigError(f"{option}: {ancestor} is a file, so {target} cannot be written")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}: cannot write in {ancestor} (permission denied)")
    # Permission bits do not tell it all (root passes them; /proc, a read-only bind mount or a full quota
    # do not): an empty file made and removed there does, before the work, not after it.
    try:
        handle, probe = tempfile.mkstemp(prefix=".iqa-write-check.", dir=ancestor)
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write in {ancestor} ({exc.strerror or exc}), so not {target}") from None
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def refused_write(exc: BaseException) -> int | None:
    """The errno of a write the file system refused behind `exc` (`WRITE_REFUSED`), or None. Libraries
    turn it into errors of their own: HDF5 and safetensors keep it in their message, and `torch.save`
    to a Python file keeps the file's OSError as the context of its RuntimeError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in WRITE_REFUSED:
            return current.errno
        for match in _ERRNO_IN_TEXT.finditer(str(current)):
            if int(match.group(1)) in WRITE_REFUSED:
                return int(match.group(1))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def naming_refused_writes(path: str | Path) -> Iterator[None]:
    """Re-raise a write the file system refused in the block as one OSError naming `path`: a full disk
    reads "PATH: No space left on device", not a library's internal error without the file."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, IQAError) or (isinstance(exc, OSError) and exc.filename is not None):
            raise  # names its own file already (the main handler shows a temporary one by its final name)
        number = refused_write(exc)
        if number is None:
            raise
        raise OSError(number, os.strerror(number), str(path)) from exc


def special_file(path: Path) -> str | None:
    """What `path` is when it is a device, a pipe or a socket (through links): `/dev/null`, `/dev/stdout`, a
    FIFO a reader waits on. Such an output is written into, never replaced: a rename would put a regular
    file in its place (as root, /dev/null itself). None for a regular file, a folder, or nothing there."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def is_standard_output(path: str | Path) -> bool:
    """Whether writing `path` writes where this process's standard output goes (`/dev/stdout`, the
    terminal itself, or the file a shell's `> FILE` opened), judged by the file both reach."""
    try:
        out, target = os.fstat(1), os.stat(path)
    except (OSError, ValueError):  # no standard output, nothing there yet, or a name no file can have
        return False
    return (out.st_dev, out.st_ino) == (target.st_dev, target.st_ino)


def non_file_kind(path: Path) -> str | None:
    """What stands at `path` (through links) when it is no regular file to read: "folder", "special" (a
    pipe, a device or a socket) or "missing"; None for a regular file."""
    if path.is_file():
        return None
    if path.is_dir():
        return "folder"
    return "special" if path.exists() else "missing"


def write_target(final: str | Path) -> Path:
    """The file a write to `final` changes: where a symbolic link points (the link stays a link, and a cache
    linked to a scratch disk is written there, not beside the link), else `final` itself."""
    final = Path(final)
    if special_file(final) is not None:
        return final  # /dev/stdout: a link to /proc/self/fd/1, whose target may be no path at all (`pipe:[...]`)
    return final.resolve() if final.is_symlink() else final


@contextlib.contextmanager
def atomic_path(final: str | Path, *, while_stopping: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds.

    The temporary name starts with '.' and ends with '.partial', so an interrupted run leaves
    nothing that looks like a valid output. Once a stop is requested (a signal) nothing is renamed into
    place, except with `while_stopping`: a record that the stop itself writes (where to resume).
    A symbolic link is written through (`write_target`); a device or a pipe (`special_file`) is yielded
    itself and written into, as a shell's `>` does.
    """
    final = write_target(final)
    if special_file(final) is not None:
        if not while_stopping:
            raise_if_stopped()
        yield final
        return
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{short_name(final.name)}.{_host()}.{os.getpid()}.", suffix=PARTIAL_SUFFIX, dir=final.parent
        )
    except OSError as exc:  # name what the user asked for, not an internal temporary name
        raise DataError(f"cannot write here ({exc.strerror or exc}): choose a writable place", path=final) from None
    os.close(fd)
    tmp_path = Path(tmp)
    _FINAL_OF[str(tmp_path)] = str(final)
    try:
        with naming_refused_writes(final):
            yield tmp_path
            if tmp_path.exists():
                # mkstemp creates 0600; a finished file gets the permissions any new file would (umask),
                # and reaches the disk before its name does.
                _set_permissions(tmp_path, 0o666 & ~_umask())
                with open(tmp_path, "rb") as handle:
                    os.fsync(handle.fileno())
        if not while_stopping:
            raise_if_stopped()
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    finally:
        _FINAL_OF.pop(str(tmp_path), None)


# What a file system says of a permission change it does not keep (FAT and exFAT drives, some SMB
# mounts): the file is written all the same, with the permissions that file system gives every file.
_NO_PERMISSIONS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


def _set_permissions(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError as exc:
        if exc.errno not in _NO_PERMISSIONS:
            raise


def _umask() -> int:
    """The process umask, read once (reading it means setting it, which is not thread-safe)."""
    global _UMASK
    if _UMASK is None:
        mask = os.umask(0)
        os.umask(mask)
        _UMASK = mask
    return _UMASK


def user_path(filename: str | os.PathLike[str] | None) -> str | None:
    """The path a user knows for `filename`: the final path for one of our temporary `.partial` names."""
    if filename is None:
        return None
    path = Path(os.fsdecode(filename))
    if str(path) in _FINAL_OF:  # one of this process's, perhaps with a shortened name
        return _FINAL_OF[str(path)]
    name = path.name
    if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
        stem = name[1 : -len(PARTIAL_SUFFIX)]
        parts = stem.split(".")
        # .<final>.<host>.<pid>.<random>.partial, or .<final>.partial (the weights store)
        final = ".".join(parts[:-3]) if len(parts) > 3 and parts[-2].isdigit() else stem
        return str(path.with_name(final))
    return str(path)
