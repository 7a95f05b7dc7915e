"""The local weights store: checkpoint files plus an index, under `$IQA_HOME/weights`.

Layout: `<name><suffix>` per checkpoint, `index.json` (name -> file, method, sha256, size, source,
added time), and hidden `.<name>.lock` / `.<name>.partial` working files. Names are validated so that
nothing a name (or a tampered index) contains can make the store write or delete outside its folder.
Concurrency: one file lock per name (held while a file is written) and one for the index, always
taken in that order, so cluster jobs sharing a home folder do not corrupt each other's writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from iqa_cli.atomic import atomic_path
from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.home import weights_dir
from iqa_cli.locks import lock_refused
from iqa_cli.stop import raise_if_stopped
from iqa_cli.weights.names import validate_name

log = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".tar")
DEFAULT_SUFFIX = ".pt"
INDEX_NAME = "index.json"
PINS_NAME = "pins.json"  # full SHA-256 of prefix-only downloads, pinned at their first verified download
CHUNK = 1 << 20


class StoreLock:
    """filelock's lock on one file of the store. Where the file system refuses locks with an error of its
    own (ENOLCK: NFS without its lock daemon), acquiring is one line naming the lock file, not a bare
    "No locks available". (Where `flock` is missing altogether, filelock falls back to lock files.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(str(path), is_singleton=True)

    def acquire(self, timeout: float | None = None) -> None:
        try:
            self._lock.acquire(timeout=timeout)
        except TimeoutError:  # filelock's Timeout: another process holds it (an OSError too)
            raise
        except OSError as exc:
            raise lock_refused(self.path, exc, "set IQA_HOME to a folder on a disk whose locks work") from None

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> StoreLock:
        try:
            self.acquire(timeout=0)
        except TimeoutError:  # say what is waited for: a wait without a word reads as a hang
            log.warning(
                f"waiting for {self.path}: another iqa process holds it (on a file system without flock, "
                "a lock file is held while it exists: remove it if no iqa process uses the store)"
            )
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def store_suffix(file_name: str | None) -> str:
    """Keep a recognised checkpoint suffix (the reader picks safetensors vs torch by it)."""
    suffix = Path(file_name or "").suffix.lower()
    return suffix if suffix in SUFFIXES else DEFAULT_SUFFIX


def sha256_file(path: str | Path, on_chunk: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class StoredWeights:
    name: str
    file: str  # file name inside the store folder
    sha256: str
    size: int
    source: str  # URL, or the path of the file it was added/imported from
    added: str  # ISO 8601 UTC
    method: str | None = None
    source_sha256: str | None = None  # for imports: the hash of the authors' original file
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StoredWeights:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)


@dataclass(frozen=True)
class VerifyResult:
    name: str
    path: Path
    ok: bool
    expected: str | None
    actual: str | None
    reason: str  # "ok", "missing file", "sha256 mismatch", "not the registry's file", ...


def _how_to_get(name: str) -> str:
    """How a checkpoint missing from the store is had: fetched, downloaded by hand, or it is no known name."""
    from iqa_cli.weights.registry import find_known

    known = find_known(name)
    if known is None:
        return (
            f"and no checkpoint of that name is known, see `iqa weights list`; give a file or a run, or store a file "
            f"under that name with `iqa weights add {name} FILE`"
        )
    if known.downloadable:
        return f"get it with `iqa weights fetch {name}`"
    return known.note or f"no direct download is known: download it by hand, then `iqa weights add {name} FILE`"


def _refuse_case_twin(name: str, entries: dict[str, Any]) -> None:
    """Names differing only in case are one file on a case-insensitive file system (macOS, Windows): the
    second would overwrite the first's weights under its name."""
    twins = [other for other in entries if other != name and other.lower() == name.lower()]
    if twins:
        raise ConfigError(
            f"'{name}' differs from '{twins[0]}' in the weights store only in case: on a case-insensitive file "
            "system their files are one; pick another name (or remove the other first)"
        )


class WeightStore:
    """Files under one folder plus an index; every write is atomic and locked."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else weights_dir()

    # -- paths and locks ---------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def _inside(self, file_name: str) -> Path:
        """Join a plain file name onto the root, refusing anything that would land elsewhere."""
        path = self.root / file_name
        if Path(file_name).name != file_name or path.resolve().parent != self.root.resolve():
            raise CheckpointError(f"refusing a store file name outside the store: {file_name!r}", path=self.root)
        return path

    def file_path(self, name: str, suffix: str) -> Path:
        return self._inside(validate_name(name) + suffix)

    def partial_path(self, name: str) -> Path:
        return self._inside(f".{validate_name(name)}.partial")

    def lock(self, name: str) -> StoreLock:
        """The per-name lock: held while a file of that name is downloaded, written or removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        return StoreLock(self._inside(f".{validate_name(name)}.lock"))

    def _index_lock(self) -> StoreLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return StoreLock(self.root / ".index.lock")

    # -- index ---------------------------------------------------------------------------------------
    def _read_raw(self) -> dict[str, Any]:
        """The index's entries as stored (name -> raw JSON); an unreadable index file is one clear error."""
        if not self.index_path.is_file():
            return {}
        try:
            doc = json.loads(self.index_path.read_text(encoding="utf-8"))
            raw = doc["weights"]
            if not isinstance(raw, dict):
                raise TypeError("'weights' is not an object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"weights store index is unreadable ({exc}); `iqa weights verify --repair` rebuilds it from the files",
                path=self.index_path,
            ) from None
        return dict(raw)

    def _parse_entry(self, name: str, raw: Any) -> StoredWeights:
        """One index entry, checked: a tampered entry must not point the store elsewhere."""
        validate_name(name)
        if not isinstance(raw, dict):
            raise CheckpointError(f"store index entry '{name}' is not an object")
        try:
            entry = StoredWeights.from_json(raw)
        except TypeError as exc:
            raise CheckpointError(f"store index entry '{name}' is incomplete ({exc})") from None
        if not isinstance(entry.file, str):
            raise CheckpointError(f"store index entry '{name}' has no file name")
        path = self._inside(entry.file)
        if path.is_symlink():
            raise CheckpointError(f"store file of '{name}' is a symbolic link; the store holds only plain files")
        return entry

    def _read_all(self) -> tuple[dict[str, StoredWeights], dict[str, str]]:
        """(good entries, bad entries' reasons): one bad entry does not make the others unusable."""
        good, bad = {}, {}
        for name, raw in self._read_raw().items():
            try:
                good[name] = self._parse_entry(name, raw)
            except (CheckpointError, ConfigError) as exc:
                bad[str(name)] = str(exc)
        return good, bad

    def _read_index(self) -> dict[str, StoredWeights]:
        return self._read_all()[0]

    def problems(self) -> dict[str, str]:
        """Index entries refused as unsafe or malformed, by name, with the reason (see `verify --repair`)."""
        return self._read_all()[1]

    def _write_index(self, raw: dict[str, Any]) -> None:
        doc = {"format": 1, "weights": dict(sorted(raw.items()))}
        with atomic_path(self.index_path) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    @contextlib.contextmanager
    def _editing_index(self) -> Iterator[dict[str, Any]]:
        """The raw entries for editing (bad ones are kept as they are unless removed)."""
        with self._index_lock():
            raw = self._read_raw()
            yield raw
            self._write_index(raw)

    # -- pins ---------------------------------------------------------------------------------------
    @property
    def pins_path(self) -> Path:
        return self.root / PINS_NAME

    def pins(self) -> dict[str, str]:
        try:
            raw = json.loads(self.pins_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"pinned digests are unreadable ({exc})", path=self.pins_path) from None
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def pin(self, name: str, sha256: str) -> None:
        """Remember `name`'s full SHA-256 (kept across `rm`: a later download must match it)."""
        with self._index_lock():
            pins = self.pins()
            pins[validate_name(name)] = sha256
            with atomic_path(self.pins_path) as tmp:
                tmp.write_text(json.dumps(dict(sorted(pins.items())), indent=2) + "\n", encoding="utf-8")

    # -- queries ------------------------------------------------------------------------------------
    def entries(self) -> list[StoredWeights]:
        return [e for _, e in sorted(self._read_index().items())]

    def get(self, name: str) -> StoredWeights | None:
        good, bad = self._read_all()
        name = validate_name(name)
        if name in bad:
            raise CheckpointError(f"refusing '{name}': {bad[name]} (remove it with `iqa weights rm {name}`)")
        return good.get(name)

    def has(self, name: str) -> bool:
        entry = self.get(name)
        return entry is not None and self._inside(entry.file).is_file()

    def path(self, name: str) -> Path:
        """The stored file of `name`, or a one-line error saying how to get it."""
        entry = self.get(name)
        if entry is None:
            raise CheckpointError(f"'{name}' is not in the weights store {self.root} ({_how_to_get(name)})")
        path = self._inside(entry.file)
        if not path.is_file():
            raise CheckpointError(
                f"the store index lists '{name}' but its file is missing (run `iqa weights rm {name}` and fetch again)",
                path=path,
            )
        return path

    # -- writes -------------------------------------------------------------------------------------
    def commit(
        self,
        name: str,
        staged: Path,
        *,
        suffix: str,
        sha256: str,
        source: str,
        method: str | None = None,
        source_sha256: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> StoredWeights:
        """Move a fully written, verified file from inside the store folder to its final name."""
        final = self.file_path(name, suffix)
        if staged.resolve().parent != self.root.resolve():
            raise CheckpointError("a staged file must be inside the store folder", path=staged)
        entry = StoredWeights(
            name=name,
            file=final.name,
            sha256=sha256,
            size=staged.stat().st_size,
            source=source,
            added=_now(),
            method=method,
            source_sha256=source_sha256,
            extra=dict(extra or {}),
        )
        with self._editing_index() as entries:
            _refuse_case_twin(name, entries)
            old = entries.get(name)
            raise_if_stopped()
            os.replace(staged, final)
            old_file = old.get("file") if isinstance(old, dict) else None
            if isinstance(old_file, str) and old_file != final.name:
                with contextlib.suppress(FileNotFoundError, CheckpointError):
                    self._inside(old_file).unlink()
            entries[name] = entry.to_json()
        return entry

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A temporary file inside the store folder for `name`; removed unless committed."""
        validate_name(name)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._inside(f".{name}.{os.getpid()}.staging")
        try:
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def ensure_free(self, name: str, overwrite: bool) -> None:
        _refuse_case_twin(name, self._read_raw())
        if not overwrite and self.get(name) is not None:
            raise ConfigError(f"'{name}' is already in the weights store (use --force to replace it, or another name)")

    def add(
        self,
        name: str,
        file: str | Path,
        *,
        method: str | None = None,
        overwrite: bool = False,
        expect: Callable[[str], str | None] | None = None,
    ) -> StoredWeights:
        """Copy `file` into the store as `name`, hashing it on the way.

        `expect(sha256)` may return an error message to refuse the file (e.g. it is not the file a
        registry entry of that name describes); the copy is then deleted.
        """
        from iqa_cli.models.checkpoint import require_checkpoint_file  # torch: `add` checks the tensors anyway

        file = Path(file)
        require_checkpoint_file(file)
        with self.lock(name):
            self.ensure_free(name, overwrite)
            with self.staging(name) as tmp:
                shutil.copyfile(file, tmp)
                sha = sha256_file(tmp)
                problem = expect(sha) if expect is not None else None
                if problem:
                    raise CheckpointError(problem, path=file)
                return self.commit(
                    name, tmp, suffix=store_suffix(file.name), sha256=sha, source=str(file.resolve()), method=method
                )

    def rm(self, name: str) -> StoredWeights | None:
        """Remove `name`'s entry and file; a refused (unsafe) entry loses its index line, and no file
        outside the store is touched. Returns the entry, or None for a refused one."""
        with self.lock(name):
            with self._editing_index() as entries:
                raw = entries.pop(validate_name(name), None)
                if raw is None:
                    raise CheckpointError(f"'{name}' is not in the weights store {self.root}")
                try:
                    entry: StoredWeights | None = self._parse_entry(name, raw)
                except (CheckpointError, ConfigError):
                    entry = None  # unsafe: forget it, delete nothing it names
                if entry is not None:
                    with contextlib.suppress(FileNotFoundError):
                        self._inside(entry.file).unlink()
            with contextlib.suppress(FileNotFoundError):
                self.partial_path(name).unlink()
        return entry

    def repair(self) -> dict[str, list[str]]:
        """Rebuild the index from the files: drop refused entries and entries whose file is missing,
        re-hash kept files, and add plain checkpoint files the index does not list. Returns what changed."""
        report: dict[str, list[str]] = {"dropped": [], "added": [], "rehashed": []}
        self.root.mkdir(parents=True, exist_ok=True)
        with self._index_lock():
            try:
                raw = self._read_raw()
            except CheckpointError:
                raw = {}  # unreadable: rebuilt from the files alone
                report["dropped"].append(f"{INDEX_NAME} (unreadable)")
            kept: dict[str, Any] = {}
            for name, item in raw.items():
                try:
                    entry = self._parse_entry(name, item)
                except (CheckpointError, ConfigError) as exc:
                    report["dropped"].append(f"{name} ({exc})")
                    continue
                path = self._inside(entry.file)
                if not path.is_file():
                    report["dropped"].append(f"{name} (file missing)")
                    continue
                sha = sha256_file(path)
                if sha != entry.sha256 or path.stat().st_size != entry.size:
                    report["rehashed"].append(f"{name} (its file changed since stored: now {sha[:12]}...)")
                    entry = StoredWeights(**{**entry.to_json(), "sha256": sha, "size": path.stat().st_size})
                kept[name] = entry.to_json()
            listed = {item["file"] for item in kept.values()}
            for path in sorted(self.root.iterdir()):
                if path.name.startswith(".") or path.name == INDEX_NAME or path.name in listed:
                    continue
                if path.is_symlink() or not path.is_file() or path.suffix.lower() not in SUFFIXES:
                    continue
                name = path.name[: -len(path.suffix)]
                try:
                    validate_name(name)
                except ConfigError:
                    continue
                if name in kept:
                    continue
                entry = StoredWeights(
                    name=name,
                    file=path.name,
                    sha256=sha256_file(path),
                    size=path.stat().st_size,
                    source="recovered by `iqa weights verify --repair` (origin unknown)",
                    added=_now(),
                )
                kept[name] = entry.to_json()
                report["added"].append(name)
            self._write_index(kept)
        return report

    # -- integrity ----------------------------------------------------------------------------------
    def verify(self, name: str, on_chunk: Callable[[int], None] | None = None) -> VerifyResult:
        """Re-hash a stored file and compare with the hash recorded when it was stored."""
        entry = self.get(name)
        if entry is None:
            raise CheckpointError(f"'{name}' is not in the weights store {self.root}")
        path = self._inside(entry.file)
        if not path.is_file():
            return VerifyResult(name, path, False, entry.sha256, None, "missing file")
        actual = sha256_file(path, on_chunk)
        if actual != entry.sha256:
            return VerifyResult(name, path, False, entry.sha256, actual, "sha256 mismatch (file changed since stored)")
        return VerifyResult(name, path, True, entry.sha256, actual, "ok")

    def find_by_path(self, path: str | Path) -> StoredWeights | None:
        """The store entry whose file is `path`, if `path` is inside this store."""
        resolved = Path(path).resolve()
        for entry in self._read_index().values():
            if self._inside(entry.file).resolve() == resolved:
                return entry
        return None
