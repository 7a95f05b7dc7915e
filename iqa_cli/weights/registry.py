"""The registry of known checkpoints: a JSON data file shipped in the package.

`iqa_cli/data/known_weights.json` lists the checkpoints iqa knows (quality models and backbone ImageNet
weights) with where they come from and how to verify them. A lab can add its own entries (e.g. files on
its own server) with a JSON file of the same format named by `$IQA_WEIGHTS_REGISTRY`; its entries
override packaged ones of the same name.

Verification: `sha256` is the full digest when the publisher gives it. Many publishers (torch.hub,
torchvision, DeiT) only put the first hex digits of the SHA-256 into the file name; `sha256_prefix`
records exactly that, and a download is accepted when its digest starts with it. A downloadable entry
must carry one of the two: nothing is fetched unverified.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from iqa_cli.atomic import non_file_kind
from iqa_cli.errors import ConfigError

REGISTRY_ENV = "IQA_WEIGHTS_REGISTRY"
KINDS = ("quality-model", "backbone")
FORMATS = ("pytorch", "safetensors", "torchscript")
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class KnownWeights:
    name: str
    kind: str  # "quality-model" or "backbone"
    method: str | None  # model-registry name the file loads into (None for plain backbones)
    used_by: tuple[str, ...]  # methods that use this backbone
    dataset: str | None
    split: str | None  # the authors' split, in words
    # The cache split whose test part is the authors' test set (`iqa eval` default), or
    # 'index_file:NAME' when the authors published the test indices in a file (AL-IQA's .mat files).
    test_split: str | None
    file_name: str | None
    urls: tuple[str, ...]
    sha256: str | None
    sha256_prefix: str | None
    size: int | None
    format: str
    licence: str
    origin: str
    published: bool  # False: no public direct download (e.g. Baidu Pan / Google Drive only)
    loadable: bool  # False: iqa refuses the file format (e.g. a TorchScript archive)
    note: str
    test_params: dict[str, Any] | None = None  # test-time parameters the authors' test script used for it
    # What chose the released epoch, as `--select-on` names it: "test" where the authors' training script
    # kept the epoch that scored best on the test part (their published scripts all do); None: not known.
    selected_on: str | None = None
    # The resize policy (as `iqa prepare --size` names it) of a cache whose views are the pixels the authors
    # trained and tested it on: "none" where their prep script resized the original files straight to the
    # network's view sizes (the esnthere scripts, `cv2.resize(..., INTER_CUBIC)`); None: not known.
    trained_resize: str | None = None

    @property
    def downloadable(self) -> bool:
        return self.published and self.loadable and bool(self.urls)

    @property
    def verification(self) -> str:
        if self.sha256:
            return "sha256"
        if self.sha256_prefix:
            return f"sha256 prefix {self.sha256_prefix}"
        return "none"

    def digest_matches(self, sha256: str) -> bool:
        """True when a file with this SHA-256 is the file this entry describes (as far as we know it)."""
        if self.sha256:
            return sha256 == self.sha256
        if self.sha256_prefix:
            return sha256.startswith(self.sha256_prefix)
        return True

    @property
    def status(self) -> str:
        if not self.loadable:
            return f"refused ({self.format})"
        if self.downloadable:
            return "download"
        return "manual"

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["urls"], out["used_by"] = list(self.urls), list(self.used_by)
        out["status"], out["verification"] = self.status, self.verification
        return out


def shown_url(url: str) -> str:
    """`url` as messages, logs and the store's records show it: without its user part (`user:token@`, a
    private mirror's credentials) or its query (a signed URL's signature), which a shared job log or a
    copied store would otherwise keep."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


def scrub_url(text: str, url: str) -> str:
    """`text` with `url` shown as `shown_url` shows it, and its secrets (the user part, the query) wherever
    else they appear (a library's message quotes the path and query it requested)."""
    text = text.replace(url, shown_url(url))
    parts = urlsplit(url)
    secrets = [parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else "", parts.query, parts.password or ""]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def check_url(url: str) -> str:
    """Only http(s) URLs with a host are accepted: no file://, ftp:// or scheme-less paths."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"only http(s) URLs are allowed, got '{shown_url(url)}'")
    return url


def _entry(raw: dict[str, Any], source: str) -> KnownWeights:
    from iqa_cli.weights.names import validate_name  # the store's rules decide which names are safe

    name = str(raw.get("name", ""))
    where = f"{source}: entry '{name}'"
    try:
        validate_name(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    kind, fmt = raw.get("kind"), raw.get("format", "pytorch")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}: format must be one of {', '.join(FORMATS)}")
    urls = tuple(check_url(str(u)) for u in raw.get("urls") or ())
    sha256 = (raw.get("sha256") or "").lower() or None
    prefix = (raw.get("sha256_prefix") or "").lower() or None
    if sha256 and (len(sha256) != 64 or not _HEX.match(sha256)):
        raise ConfigError(f"{where}: sha256 must be 64 hex digits")
    if prefix and (len(prefix) < 8 or not _HEX.match(prefix)):
        raise ConfigError(f"{where}: sha256_prefix must be at least 8 hex digits")
    published = _flag(raw, "published", bool(urls), where)
    if published and urls and not (sha256 or prefix):
        raise ConfigError(f"{where}: a downloadable entry needs sha256 or sha256_prefix")
    file_name = raw.get("file_name") or (Path(urlparse(urls[0]).path).name if urls else None)
    if file_name is not None and (Path(file_name).name != file_name or file_name in ("", ".", "..")):
        raise ConfigError(f"{where}: file_name must be a plain file name, got {file_name!r}")
    size = raw.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ConfigError(f"{where}: size must be a whole number of bytes, got {size!r}")
    return KnownWeights(
        name=name,
        kind=kind,
        method=raw.get("method"),
        used_by=tuple(raw.get("used_by") or ()),
        dataset=raw.get("dataset"),
        split=raw.get("split"),
        test_split=raw.get("test_split"),
        file_name=file_name,
        urls=urls,
        sha256=sha256,
        sha256_prefix=prefix,
        size=size,
        format=fmt,
        licence=str(raw.get("licence") or "unknown"),
        origin=str(raw.get("origin") or "unknown"),
        published=published,
        loadable=_flag(raw, "loadable", True, where),
        note=str(raw.get("note") or ""),
        test_params=dict(raw["test_params"]) if isinstance(raw.get("test_params"), dict) else None,
        selected_on=_selected_on(raw.get("selected_on"), where),
        trained_resize=_trained_resize(raw.get("trained_resize"), where),
    )


def _trained_resize(value: Any, where: str) -> str | None:
    if value is None:
        return None
    from iqa_cli.data.resize import parse_policy

    try:
        return str(parse_policy(str(value)))
    except ConfigError as exc:
        raise ConfigError(f"{where}: trained_resize: {exc}") from None


def _selected_on(value: Any, where: str) -> str | None:
    if value is not None and value not in ("test", "val"):
        raise ConfigError(f"{where}: selected_on must be test, val or absent, got {value!r}")
    return value


def _parse(text: str, source: str) -> list[KnownWeights]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise ConfigError(f"{source}: expected an object with an 'entries' list")
    return [_entry(raw, source) for raw in doc["entries"]]


def _flag(raw: dict[str, Any], key: str, default: bool, where: str) -> bool:
    """A yes/no field: JSON's true or false ("false" as text was read as true)."""
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


@lru_cache(maxsize=8)
def _load(extra: str | None, _stamp: int) -> dict[str, KnownWeights]:
    packaged = resources.files("iqa_cli.data").joinpath("known_weights.json")
    entries = {e.name: e for e in _parse(packaged.read_text(encoding="utf-8"), "known_weights.json")}
    if extra:
        path = Path(extra).expanduser()
        kind = non_file_kind(path)
        if kind is not None:
            what = {"folder": "a folder", "special": "no regular file"}.get(kind, "a file that does not exist")
            raise ConfigError(f"{REGISTRY_ENV} names {what}: {path} (expected a JSON registry file)")
        entries.update({e.name: e for e in _parse(path.read_text(encoding="utf-8"), str(path))})
    return entries


def known_weights() -> dict[str, KnownWeights]:
    """All known entries by name: the packaged file plus `$IQA_WEIGHTS_REGISTRY`, if set."""
    extra = os.environ.get(REGISTRY_ENV) or None
    try:  # the modification time is part of the cache key, so an edited file is re-read
        stamp = Path(extra).expanduser().stat().st_mtime_ns if extra else 0
    except OSError:
        stamp = -1
    return dict(_load(extra, stamp))


def find_known(name: str) -> KnownWeights | None:
    return known_weights().get(name)


def get_known(name: str) -> KnownWeights:
    entry = find_known(name)
    if entry is None:
        raise ConfigError(f"unknown checkpoint '{name}' (see `iqa weights list` for the known names)")
    return entry
