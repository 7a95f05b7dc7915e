"""Finding the kept model of an earlier training stage (IEIT stage 2 starts from stage 1 of the same split).

`earlier_stage_weights` takes what the user named (`--from RUN`: a run folder, a run name under
$IQA_HOME/runs, or a checkpoint file) or, by default, searches the newest run of the method on the
same dataset whose configuration says it trained that stage, at the same size (`--tiny` or not), and
whose split finished with a kept model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iqa_cli.errors import ConfigError
from iqa_cli.home import runs_dir
from iqa_cli.train.runs import BEST, list_runs, read_run, split_dir


def _run_stage(info: dict[str, Any]) -> Any:
    return (info.get("config") or {}).get("params", {}).get("stage")


def _named_run(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir() or path.is_file():
        return path
    candidate = runs_dir() / name
    if "/" not in name and candidate.is_dir():
        return candidate
    raise ConfigError(f"--from {name}: no such run folder, run name in {runs_dir()} or checkpoint file")


def earlier_stage_weights(
    method: str,
    *,
    stage: int,
    dataset: str,
    split: str,
    tiny: bool,
    named: str | None,
    train_hint: str,
    split_digest: str | None = None,
    images_digest: str | None = None,
) -> Path:
    """The kept model (best.safetensors) of `split` from a run of `method` that trained `stage`; the search
    skips runs whose `split` held other images (`split_digest`: the cache was prepared again since). A run
    is of this dataset by its name, or by its images (`images_digest`: a copy of the cache under another
    name holds the same images and splits)."""

    def same_dataset(info: dict[str, Any]) -> bool:
        recorded = (info.get("cache_identity") or {}).get("images_digest")
        return info.get("dataset") == dataset or bool(images_digest and recorded == images_digest)

    from iqa_cli.train.weights import run_weights  # torch, only once a stage is looked up

    if named is not None:
        path = _named_run(named)
        if path.is_file():
            return path  # a checkpoint file: its names and shapes are checked when it is loaded
        info = read_run(path)
        if info.get("method") != method or _run_stage(info) != stage:
            raise ConfigError(
                f"--from: run is {info.get('method')} stage {_run_stage(info)}, not {method} stage {stage}", path=path
            )
        if not same_dataset(info):
            raise ConfigError(
                f"--from: run trained on '{info.get('dataset')}', other images than '{dataset}' holds", path=path
            )
        run = run_weights(path)
        if split in run.by_split:
            return run.by_split[split]
        best = split_dir(path, split) / BEST
        state = f" (split {split} is {run.unfinished.get(split, 'not in it')})" if best.is_file() else ""
        raise ConfigError(
            f"--from: run has no finished kept model for split {split}{state}; finished: "
            f"{', '.join(run.by_split) or 'none'}"
            + (f" (resume it, or name {best} to start from that model as it stands)" if best.is_file() else ""),
            path=path,
        )
    other_images = []
    for path, info in list_runs(method):
        if not same_dataset(info) or _run_stage(info) != stage or bool((info.get("config") or {}).get("tiny")) != tiny:
            continue
        finished = run_weights(path).by_split
        if split not in finished:
            continue
        recorded = ((info.get("splits") or {}).get(split) or {}).get("digest")
        if split_digest is not None and recorded not in (None, split_digest):
            other_images.append(path.name)
            continue
        return finished[split]
    size = " --tiny" if tiny else ""
    why = ""
    if other_images:
        why = (
            f" ({', '.join(other_images)} trained split {split} as it was before the cache was prepared again: it "
            "holds other images now)"
        )
    raise ConfigError(
        f"no finished {method} stage-{stage}{size} run on '{dataset}' with a kept model for split {split}{why}; "
        f"train it first with `{train_hint}`, or name one with --from RUN"
    )
