"""Download known checkpoints into the store: resumable, retried, verified, locked.

One download per name at a time (a file lock in the store): a second process fetching the same
file waits, then finds it in the store and reuses it. Bytes go to `.<name>.partial` inside the store;
an interrupted transfer is resumed with an HTTP Range request; the SHA-256 is checked before the file
is renamed to its final name, and a mismatch deletes the download. Transient failures (connection
errors, timeouts, HTTP 5xx/429) are retried with exponential back-off; other HTTP errors are not.
Proxies come from the environment (HTTP(S)_PROXY, NO_PROXY), as requests does by default.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from iqa_cli.atomic import naming_refused_writes
from iqa_cli.envvars import MAX_DOWNLOAD_BYTES_ENV, OFFLINE_ENV, offline
from iqa_cli.envvars import max_download_bytes as max_download_bytes_env
from iqa_cli.errors import DownloadError
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.version import __version__
from iqa_cli.weights.registry import KnownWeights, check_url, get_known, scrub_url, shown_url
from iqa_cli.weights.store import StoredWeights, WeightStore, sha256_file, store_suffix

log = logging.getLogger(__name__)

MIRROR_ENV = "IQA_WEIGHTS_MIRROR"
# Unreachable hosts are not worth many retries: one more try, then one complete line saying what to do.
UNREACHABLE_RETRIES = 1
OFFLINE_HINT = (
    f"set {OFFLINE_ENV}=1 to work offline, point {MIRROR_ENV} at a reachable mirror, copy the file in with "
    "`iqa weights add NAME FILE`, or try a run without downloads (`--pretrained none`, or `--tiny`)"
)
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class FetchOptions:
    connect_timeout: float = 15.0  # seconds to open a connection
    read_timeout: float = 60.0  # seconds without a byte before the transfer counts as stalled
    retries: int = 5  # further attempts per URL after the first, for transient failures
    backoff: float = 1.0  # first wait; doubles each retry
    max_backoff: float = 60.0
    chunk_size: int = 1 << 16  # bytes per write; a dropped connection loses at most one chunk
    mirror: str | None = None  # base URL; the file name is appended. Default: $IQA_WEIGHTS_MIRROR


class _Transient(Exception):
    """A failure worth retrying (the message says what happened)."""

    def __init__(self, message: str, retry_after: float | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.unreachable = unreachable  # name resolution or connection refused: retried once only


def max_download_bytes(entry: KnownWeights) -> int:
    """The most bytes a download of `entry` may have: its registry size, else the cap."""
    if entry.size is not None:
        return entry.size
    return max_download_bytes_env()


def candidate_urls(entry: KnownWeights, mirror: str | None) -> list[str]:
    """The mirror alone when one is set (cluster nodes often reach nothing else), else the origin URLs."""
    mirror = mirror if mirror is not None else (os.environ.get(MIRROR_ENV) or None)
    if mirror:
        if not entry.file_name:
            raise DownloadError(f"'{entry.name}' has no file name to look up on the mirror {shown_url(mirror)}")
        return [check_url(mirror.rstrip("/") + "/" + entry.file_name)]
    return [check_url(u) for u in entry.urls]


def _manual_message(entry: KnownWeights) -> str:
    if not entry.loadable:
        return f"'{entry.name}' is not fetched: {entry.note}"
    file = f" ({entry.file_name})" if entry.file_name else ""
    return f"'{entry.name}'{file} has no public direct download and must be downloaded by hand. {entry.note}"


def fetch(
    name: str,
    *,
    store: WeightStore | None = None,
    options: FetchOptions | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> StoredWeights:
    """Make sure the known checkpoint `name` is in the store, downloading it if needed."""
    store = store or WeightStore()
    options = options or FetchOptions()
    progress = progress or NullProgress()
    entry = get_known(name)
    if not force and store.has(name):
        return store.get(name)  # type: ignore[return-value]
    if not entry.downloadable:
        raise DownloadError(_manual_message(entry))
    if offline():
        raise DownloadError(
            f"offline ({OFFLINE_ENV}=1) and '{name}' ({entry.file_name}) is not in the weights store {store.root}; "
            f"copy the file there with `iqa weights add {name} FILE`, or fetch it on a machine with internet"
        )
    urls = candidate_urls(entry, options.mirror)
    with store.lock(name):  # a wait names the lock file (another process downloading the same name)
        if not force and store.has(name):  # the process we waited for has finished it
            return store.get(name)  # type: ignore[return-value]
        return _download_locked(entry, urls, store, options, progress)


def _download_locked(
    entry: KnownWeights, urls: list[str], store: WeightStore, options: FetchOptions, progress: Progress
) -> StoredWeights:
    partial = store.partial_path(entry.name)
    errors: list[str] = []
    with requests.Session() as session:
        session.trust_env = True  # proxies and NO_PROXY from the environment (the default; kept on purpose)
        session.headers.update({"User-Agent": f"iqa/{__version__}", "Accept-Encoding": "identity"})
        for url in urls:
            try:
                _download_url(session, url, partial, entry, options, progress)
            except DownloadError as exc:
                errors.append(scrub_url(str(exc), url))  # a mirror's token never reaches a job's log
                continue
            return _verify_and_commit(entry, url, partial, store, progress)
    raise DownloadError(f"could not download '{entry.name}': " + " | ".join(errors))


def _download_url(
    session: requests.Session,
    url: str,
    partial: Path,
    entry: KnownWeights,
    options: FetchOptions,
    progress: Progress,
) -> None:
    """Fill `partial` with the whole file from `url`, resuming and retrying transient failures."""
    attempt = 0
    while True:
        try:
            _transfer(session, url, partial, entry, options, progress)
            return
        except _Transient as exc:
            if exc.unreachable and attempt >= UNREACHABLE_RETRIES:
                raise DownloadError(f"{url}: {exc}; {OFFLINE_HINT}") from None
            if attempt >= options.retries:
                raise DownloadError(
                    f"{url}: {exc} (gave up after {attempt + 1} attempts; the partial file is kept and the "
                    "next fetch resumes it)"
                ) from None
            wait = min(options.max_backoff, options.backoff * 2**attempt)
            if exc.retry_after is not None:
                wait = min(options.max_backoff, max(wait, exc.retry_after))
            log.info(
                scrub_url(
                    f"{url}: {exc}; retrying in {wait:.1f}s (attempt {attempt + 2} of {options.retries + 1})", url
                )
            )
            time.sleep(wait)
            attempt += 1
        finally:
            progress.finish()


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None


def _transfer(
    session: requests.Session,
    url: str,
    partial: Path,
    entry: KnownWeights,
    options: FetchOptions,
    progress: Progress,
) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    if entry.size is not None and have > entry.size:  # cannot be the right file: start over
        partial.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = session.get(
            url, headers=headers, stream=True, timeout=(options.connect_timeout, options.read_timeout)
        )
    except requests.exceptions.InvalidURL as exc:
        raise DownloadError(f"{url}: invalid URL ({exc})") from None
    except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema) as exc:
        # e.g. a mirror redirecting to file:// or ftp://: never followed
        raise DownloadError(f"{url}: redirected to an unsupported address ({_first_line(exc)}); only http(s)") from None
    except requests.TooManyRedirects:
        raise DownloadError(f"{url}: too many redirects") from None
    except TRANSIENT as exc:
        raise _Transient(_describe(exc), unreachable=_unreachable(exc)) from None
    with response:
        status = response.status_code
        if status == 416 and have:
            # Range not satisfiable: the partial file is already whole (or stale); the hash check decides.
            total = _content_range_total(response.headers.get("Content-Range", ""))
            if total == have:
                return
            partial.unlink()
            raise _Transient("server refused to resume; restarting from the beginning", retry_after=0.0)
        if status in RETRY_STATUS:
            raise _Transient(f"HTTP {status} {response.reason}", retry_after=_retry_after(response))
        if status >= 400:
            raise DownloadError(f"{url}: HTTP {status} {response.reason}")
        if status == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != have:
                partial.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start}, not {have}; restarting", retry_after=0.0)
            mode = "ab"
        else:  # 200: the server ignored Range, so the body is the whole file
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected_end = have + int(length) if length and length.isdigit() else None
        limit = max_download_bytes(entry)
        if expected_end is not None and expected_end > limit:
            partial.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server announces {expected_end} bytes, more than the {limit} expected")
        total = expected_end or entry.size
        progress.start(f"fetch {entry.name} (bytes)", total)
        if have:
            log.info(f"resuming {entry.name} at byte {have}")
            progress.advance(have)
        written = have
        try:
            with naming_refused_writes(partial), open(partial, mode) as f:  # a full disk is no network failure
                for chunk in response.iter_content(chunk_size=options.chunk_size):
                    if written + len(chunk) > limit:
                        f.close()
                        partial.unlink(missing_ok=True)
                        raise DownloadError(
                            f"{url}: sent more than the {limit} bytes expected of '{entry.name}' ("
                            f"{'its registry size' if entry.size is not None else MAX_DOWNLOAD_BYTES_ENV}); the "
                            "download was stopped and deleted"
                        )
                    f.write(chunk)
                    written += len(chunk)
                    progress.advance(len(chunk))
        except TRANSIENT as exc:
            raise _Transient(f"{_describe(exc)} after {written} bytes") from None
        if expected_end is not None and written != expected_end:
            raise _Transient(f"connection closed after {written} of {expected_end} bytes")


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    with contextlib.suppress(ValueError, IndexError):
        return int(value.split()[1].split("-")[0])
    return None


def _content_range_total(value: str) -> int | None:
    # "bytes */200"
    with contextlib.suppress(ValueError, IndexError):
        return int(value.rsplit("/", 1)[1])
    return None


def _first_line(exc: BaseException) -> str:
    """The exception's text on one line, shortened at a word boundary (never cut mid-word)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300].rsplit(" ", 1)[0] + " ..."


def _causes(exc: BaseException) -> str:
    """The text of an exception and of everything it wraps (urllib3 nests the real reason)."""
    parts, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                parts.append(f"{type(arg).__name__}: {arg}")
                reason = getattr(arg, "reason", None)
                if isinstance(reason, BaseException):
                    parts.append(f"{type(reason).__name__}: {reason}")
        current = current.__cause__ or current.__context__
    return " ".join(parts)


# What urllib3/socket say when nothing can be reached: name resolution, refused, no route.
_RESOLVE = ("NameResolutionError", "Failed to resolve", "Name or service not known",
            "Temporary failure in name resolution", "nodename nor servname")  # fmt: skip
_REFUSED = ("Connection refused",)
_NO_ROUTE = ("Network is unreachable", "No route to host")


def _unreachable(exc: BaseException) -> bool:
    text = _causes(exc)
    return any(marker in text for marker in (*_RESOLVE, *_REFUSED, *_NO_ROUTE))


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "timed out while connecting"
    if isinstance(exc, requests.ReadTimeout):
        return "timed out waiting for data (server too slow)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped mid-transfer"
    text = _causes(exc)
    if any(m in text for m in _RESOLVE):
        return "the host name could not be resolved (no network or no DNS here?)"
    if any(m in text for m in _REFUSED):
        return "the connection was refused (nothing listens there, or a firewall)"
    if any(m in text for m in _NO_ROUTE):
        return "the network is unreachable"
    if "Read timed out" in text or "timed out" in text:
        return "timed out waiting for data (server too slow)"
    return f"the connection failed ({_first_line(exc)})"


def _verify_and_commit(
    entry: KnownWeights, url: str, partial: Path, store: WeightStore, progress: Progress
) -> StoredWeights:
    size = partial.stat().st_size
    if entry.size is not None and size != entry.size:
        partial.unlink()
        raise DownloadError(
            f"'{entry.name}' from {shown_url(url)} has {size} bytes, expected {entry.size}; the download was deleted"
        )
    log.info(f"verifying {entry.name} ({entry.verification})")
    sha = sha256_file(partial)
    if not entry.digest_matches(sha):
        partial.unlink()
        want = entry.sha256 or f"{entry.sha256_prefix}..."
        raise DownloadError(
            f"SHA-256 mismatch for '{entry.name}' from {shown_url(url)}: expected {want}, got {sha}; the download was "
            "deleted"
        )
    if not entry.sha256:  # prefix-only: the first verified download pins the full digest for later ones
        pinned = store.pins().get(entry.name)
        if pinned is not None and pinned != sha:
            partial.unlink()
            raise DownloadError(
                f"'{entry.name}' from {shown_url(url)} has SHA-256 {sha}, not the {pinned} pinned at its first "
                "verified download (its published check is only an 8-hex prefix); the download was deleted"
            )
        if pinned is None:
            store.pin(entry.name, sha)
    return store.commit(
        entry.name,
        partial,
        suffix=store_suffix(entry.file_name),
        sha256=sha,
        source=shown_url(url),  # no credentials or signature kept in the store's records
        method=entry.method,
        extra={"verified": entry.verification},
    )
