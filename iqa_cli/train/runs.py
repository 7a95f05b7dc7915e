"""Run folders: where a training run keeps its configuration, logs and checkpoints.

Layout of `$IQA_HOME/runs/<name>/` (or `--out DIR`):
    run.json             method, dataset, cache, splits and their status, selection policy, created
    config.toml/.json    the resolved configuration (the TOML is re-usable with --config)
    results.json         test metrics of the kept model per split, and their median
    split-<K>/log.jsonl  one line per epoch and evaluated part (loss, metrics, images/s, lr)
    split-<K>/best.safetensors  kept model (selected on validation unless --select-on test)
    split-<K>/last.pt           resumable state (weights, optimizer, schedule, RNG, position)
    split-<K>/result.json       metrics of the kept model; split-<K>/test_predictions.csv
    split-<K>/curves.png        loss and validation/test metrics over epochs (at the end and on stop)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from iqa_cli.atomic import atomic_path, naming_refused_writes
from iqa_cli.errors import CheckpointError, ConfigError, DataError, some_names
from iqa_cli.home import runs_dir
from iqa_cli.jsonio import dumps
from iqa_cli.processes import process_alive, this_process
from iqa_cli.train.config import write_json

RUN_FILE = "run.json"
BEST = "best.safetensors"
LAST = "last.pt"
LOG = "log.jsonl"
RESULT = "result.json"
RESULT_FILE = "results.json"  # the run's report: every split's row and the median over them
PREDICTIONS = "test_predictions.csv"
CURVES = "curves.png"
# What a run writes at its top level, beside its `split-*` folders.
RUN_RECORDS = (RUN_FILE, "config.toml", "config.json", RESULT_FILE)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def default_run_name(method: str, dataset: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{method}-{_UNSAFE.sub('_', dataset)}-{stamp}"


def run_root(*, method: str, dataset: str, name: str | None, out: str | Path | None, claim: bool = False) -> Path:
    """The folder of a new run: `out`, or `name` under the runs folder, or a time-stamped default name.

    With `claim`, a default name is taken by creating its folder (an atomic `mkdir`), so jobs started in
    the same second (a SLURM job array) each get their own: `-2`, `-3`, ... A named folder is not created."""
    if out is not None:
        from iqa_cli.atomic import check_output_folder

        return check_output_folder(out, "--out").absolute()
    if name is not None:
        # A leading '-' would read as an option wherever the name is typed later (`iqa runs show -1`).
        if not name or _UNSAFE.search(name) or name.startswith((".", "-", "+")):
            raise ConfigError(
                f"invalid run name {name!r}: use letters, digits and _ . + - (starting with a letter, digit or _)"
            )
        return runs_dir() / name
    # The default name has one-second resolution: two runs started within a second (the demo run twice,
    # a job array) get `-2`, `-3`, ... instead of the second one failing with "a run already exists" or
    # "in use by another iqa job" (both picked the free name before either created it, without `claim`).
    base = default_run_name(method, dataset)
    candidate, k = runs_dir() / base, 2
    while True:
        if claim:
            try:
                candidate.mkdir(parents=True)
                return candidate
            except FileExistsError:
                pass
            except OSError as exc:
                raise DataError(f"cannot create the run folder ({exc.strerror or exc})", path=candidate) from None
        elif not candidate.exists():
            return candidate
        candidate, k = runs_dir() / f"{base}-{k}", k + 1


def check_new_run_folder(root: Path, option: str) -> None:
    """A new run goes into a new or empty folder, never among other files: a run refused before it
    trains removes what it wrote, and `iqa runs rm` the whole folder. A folder with a run.json is a run
    already (the caller says so); what a run killed before its run.json left (its records, a `.partial`)
    is no obstacle."""
    if not root.is_dir() or (root / RUN_FILE).exists():
        return
    entries = sorted(p.name for p in root.iterdir() if not _written_by_a_run(p.name))
    if entries:
        raise ConfigError(
            f"{option}: {root} already holds {len(entries)} file(s) or folder(s) ({some_names(entries)}) and is no "
            "run folder; "
            "a new run needs a new or empty folder"
        )


def remove_unstarted_run(root: Path, *, keep_folder: bool = False) -> None:
    """Remove what a run wrote before it trained a step (its records and empty split folders), then the
    folder if nothing else is in it (unless `keep_folder`: one the user made). Never a whole tree."""
    import shutil

    for name in RUN_RECORDS:
        (root / name).unlink(missing_ok=True)
    for split in root.glob("split-*"):
        if split.is_dir():
            shutil.rmtree(split, ignore_errors=True)
    if not keep_folder:
        with contextlib.suppress(OSError):
            root.rmdir()


def split_dir(root: Path, split: str) -> Path:
    return root / f"split-{_UNSAFE.sub('_', split)}"


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a split's `log.jsonl` (none when it does not exist yet). A last line without its
    newline is one a process was killed while writing (or is writing now): it is left out. Any other line
    that is no JSON record is a ConfigError naming the file and the line."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    unfinished = lines.pop()  # "" when the file ends with its newline
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"damaged log at line {number} ({exc.msg})", path=path) from None
        if not isinstance(record, dict):
            raise ConfigError(f"damaged log at line {number} (a JSON {type(record).__name__}, not a record)", path=path)
        records.append(record)
    if unfinished.strip():
        log.debug(f"{path}: its last line is unfinished (a write cut short, or one under way): left out")
    return records


def append_log(path: Path, line: str) -> None:
    """Append one record's line to a split's `log.jsonl`. An unfinished last line (a process killed while
    writing it) is cut off first, so the new record starts a line of its own instead of joining it."""
    with naming_refused_writes(path), open(path, "a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(max(0, size - 1))
            if handle.read(1) != b"\n":
                handle.seek(0)
                handle.truncate(handle.read().rfind(b"\n") + 1)
        handle.write(line.encode() + b"\n")


def drop_logged_epochs(path: Path, first: int) -> int:
    """Remove the evaluation records of epoch `first` and later from a split's `log.jsonl` (events such as
    "stopped by" stay): a run killed after logging an epoch but before saving its `last.pt` trains that
    epoch again when resumed, which would log it twice. Returns how many records were removed."""
    records = read_log(path)
    kept = [r for r in records if "part" not in r or int(r.get("epoch", -1)) < first]
    if len(kept) < len(records):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(dumps(r) + "\n" for r in kept), encoding="utf-8")
    return len(records) - len(kept)


def read_run(root: Path) -> dict[str, Any]:
    path = root / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("not a run folder (no run.json)", path=root) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"damaged run.json ({exc})", path=path) from None
    if not isinstance(info, dict):
        raise ConfigError(f"damaged run.json (a JSON {type(info).__name__}, not a run's record)", path=path)
    return info


def write_run(root: Path, info: dict[str, Any]) -> None:
    info["updated"] = now()
    if info.get("status") == "running":  # who runs it, so a run killed from outside can be told apart
        info["process"] = this_process()
    write_json(root / RUN_FILE, info)


def _process_alive(process: dict[str, Any]) -> bool:
    pid = process.get("pid")
    if not isinstance(pid, int):
        return True  # nothing to check: as it says
    boot, started = process.get("boot_id"), process.get("start_ticks")
    return process_alive(
        pid, boot=boot if isinstance(boot, str) else None, start_ticks=started if isinstance(started, int) else None
    )


def _status_text(info: dict[str, Any]) -> str:
    status = effective_status(info)
    return f"{status} (step limit)" if status == "complete" and splits_cut_short(info) else status


def effective_status(info: dict[str, Any]) -> str:
    """The run's status, with a 'running' run whose process is gone (SIGKILL, the OOM killer, a node
    that rebooted) shown as 'killed'. A run on another host cannot be checked and stays 'running'."""
    status = str(info.get("status") or "unknown")
    process = info.get("process") or {}
    if status == "running" and process.get("host") == socket.gethostname():
        if process.get("pid") != os.getpid() and not _process_alive(process):
            return "killed"
    return status


def trained_on(info: dict[str, Any], data: str | Path) -> bool:
    """Whether a run was trained on `data`: a dataset name (`koniq`) or a cache file (`/x/k.h5`), however
    the run was started (`--data koniq` or `--data ~/.cache/iqa/data/koniq.h5` find the same runs)."""
    text = str(data)
    cache = info.get("cache")
    if Path(text).suffix or "/" in text:  # a path: the same file
        if not cache:
            return False
        try:
            return Path(text).expanduser().resolve() == Path(cache).expanduser().resolve()
        except OSError:
            return False
    names = {info.get("dataset"), info.get("data"), Path(cache).stem if cache else None}
    return text in names


_TOLD_DAMAGED: set[str] = set()


def _skipped_damaged(record: Path, why: str) -> None:
    """Warn once per process of a run left out because its record cannot be read: unsaid, the newest run
    could be passed over for an older one (`iqa eval --data X` scores the newest finished run)."""
    if str(record) not in _TOLD_DAMAGED:
        _TOLD_DAMAGED.add(str(record))
        log.warning(f"{record}: damaged run record ({why}); run left out of the runs listed and searched")


def list_runs(method: str | None = None, dataset: str | Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Runs in the runs folder, newest first, optionally of one method and training dataset (a name
    or a cache path)."""
    found = []
    base = runs_dir()
    if not base.is_dir():
        return []
    for path in base.iterdir():
        record = path / RUN_FILE
        try:
            info = json.loads(record.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            continue  # not a run folder (a file, or a folder without a record)
        except (OSError, ValueError) as exc:
            _skipped_damaged(record, f"{type(exc).__name__}: {exc}")
            continue
        if not isinstance(info, dict):
            _skipped_damaged(record, f"a JSON {type(info).__name__}, not an object")
            continue
        if method is not None and info.get("method") != method:
            continue
        if dataset is not None and not trained_on(info, dataset):
            continue
        found.append((path, info))
    return sorted(found, key=lambda item: str(item[1].get("created", "")), reverse=True)


# How a split's `stopped_because` starts when `--max-steps` cut it before its protocol ended.
STEP_LIMIT = "step limit"


def cut_by_step_limit(stopped_because: object) -> bool:
    return str(stopped_because or "").startswith(STEP_LIMIT)


def splits_cut_short(info: dict[str, Any]) -> list[str]:
    """The splits of a run record whose training `--max-steps` stopped before their protocol ended."""
    splits = info.get("splits") or {}
    return [
        str(name)
        for name, state in splits.items()
        if isinstance(state, dict) and cut_by_step_limit((state.get("result") or {}).get("stopped_because"))
    ]


def run_summary(path: Path, info: dict[str, Any]) -> dict[str, Any]:
    """One line of `iqa runs list`: name, method, dataset, splits, status, kept metrics, times."""
    median = info.get("median") or {}
    started, ended = info.get("created"), info.get("finished") or info.get("updated")
    duration = None
    try:
        if started and ended:
            duration = (datetime.fromisoformat(str(ended)) - datetime.fromisoformat(str(started))).total_seconds()
    except ValueError:
        duration = None
    splits = info.get("splits") or {}
    problem = info.get("problem") if info.get("status") == "complete" else None
    if problem:  # a median over the measured splits alone would stand for all of them
        median = {}
    return {
        "name": path.name,
        "path": str(path),
        "method": info.get("method"),
        "dataset": info.get("dataset"),
        "splits": len(splits),
        "splits_done": sum(1 for s in splits.values() if isinstance(s, dict) and s.get("status") == "complete"),
        "status": "no result" if problem else _status_text(info),
        "problem": problem,
        "srcc": median.get("srcc"),
        "plcc": median.get("plcc"),
        # A classifier's (VIPNet's DPM) headline instead, where it has no correlations.
        **({"accuracy": median["accuracy"]} if "srcc" not in median and "accuracy" in median else {}),
        "selected_on": info.get("selected_on"),  # "test": the kept epoch was picked on the test part itself
        "started": started,
        "duration_s": duration,
    }


def find_run(name_or_path: str | Path) -> Path:
    """A run folder from its name (in the runs folder) or its path; a one-line error otherwise."""
    text = str(name_or_path)
    candidates = [Path(text).expanduser()]
    if "/" not in text and _UNSAFE.search(text) is None:
        candidates.insert(0, runs_dir() / text)
    for candidate in candidates:
        if (candidate / RUN_FILE).is_file():
            return candidate
    raise ConfigError(f"no run named '{text}' (see `iqa runs list`; runs live in {runs_dir()})")


def find_weights_run(name_or_path: str | Path) -> Path:
    """`find_run` for a `--weights` value, which may also be a weights-store name: a bare name that is
    both a run and a stored checkpoint is refused, since either could be the model meant."""
    root = find_run(name_or_path)
    text = str(name_or_path)
    if root == runs_dir() / text:  # found by its name, not its folder
        from iqa_cli.weights.store import WeightStore

        store = WeightStore()
        try:
            stored = store.path(text) if store.has(text) else None
        except (ConfigError, DataError, OSError):  # a name the store cannot hold, an unreadable index
            stored = None
        if stored is not None:  # not a ConfigError: callers take that for "no run of that name"
            raise CheckpointError(
                f"'{text}' names both a run ({root}) and a stored checkpoint ({stored}); give the run's folder or "
                "the stored file's path"
            )
    return root


def remove_run(name_or_path: str | Path) -> Path:
    """Delete a run folder; refused while a job holds it (or, where file locks do not work, while its record
    says a job runs it)."""
    import shutil

    from iqa_cli.locks import hold

    root = find_run(name_or_path)
    if root.is_symlink():
        raise ConfigError(
            f"is a symbolic link to {root.resolve()}: remove the link itself, or name the run folder", path=root
        )
    foreign = sorted(entry.name for entry in root.iterdir() if not _written_by_a_run(entry.name))
    if foreign:  # e.g. a run an older iqa wrote into a folder of the user's
        raise ConfigError(
            f"also holds {len(foreign)} file(s) or folder(s) no run writes ({some_names(foreign)}): move them out "
            "first, or "
            "delete the folder yourself",
            path=root,
        )
    with hold(root, "run folder") as locked:
        if not locked:  # without working locks, the run's record is all that tells of a job using it
            _refuse_if_marked_running(root)
        shutil.rmtree(root)
    return root


def _refuse_if_marked_running(root: Path) -> None:
    try:
        info = read_run(root)
    except ConfigError:
        return  # a damaged record tells nothing either way
    if effective_status(info) == "running":
        process = info.get("process") or {}
        raise ConfigError(
            f"is marked running (pid {process.get('pid', '?')} on {process.get('host', '?')}) and file locks do not "
            "work here, so iqa cannot tell whether that job still writes it: stop it first, or delete the folder "
            "yourself",
            path=root,
        )


def _written_by_a_run(name: str) -> bool:
    from iqa_cli.atomic import PARTIAL_SUFFIX

    return name in RUN_RECORDS or name.startswith("split-") or (name.startswith(".") and name.endswith(PARTIAL_SUFFIX))


def newest_run(method: str, dataset: str | None, *, unfinished: bool = False, with_best: bool = False) -> Path | None:
    for path, info in list_runs(method, dataset):
        splits = info.get("splits", {})
        if unfinished:
            if info.get("status") == "complete" or effective_status(info) == "running":
                continue  # finished, or training right now in another process of this host
            started = any(isinstance(s, dict) and s.get("status") not in (None, "pending") for s in splits.values())
            if not started:
                continue  # never trained a step: nothing to resume

        if with_best and not any((split_dir(path, s) / BEST).is_file() for s in splits):
            continue
        return path
    return None
