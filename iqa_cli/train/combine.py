"""One report from runs that each trained some splits of one protocol.

A cluster runs the 10-split protocol as a job array, one split per job (`iqa train vtiqa --data koniq
--split $SLURM_ARRAY_TASK_ID`), so each run holds one split's result. `combine_runs` joins them into the
report one run over every split would give: the split rows, and median, mean and std over them. It is
refused unless the runs are of one method, on one dataset (the same images, scores and size policy, by
`cache_identity`) split the same way (the digests of the cache's stored splits, `stored_splits`), with
the same options (where they ran aside), selected the same way, finished, and no split is in two runs:
otherwise the median would mix results that are not one protocol's.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from iqa_cli.data.authors_splits import is_protocol_split
from iqa_cli.errors import ConfigError, DataError, some_names
from iqa_cli.train.choices import changed_inputs, choices_change, inputs_text, run_choices
from iqa_cli.train.data import (
    close_dataset,
    is_whole_split,
    open_dataset,
    recorded_split_digests,
    same_cache_identity,
    stored_split_digests,
    trained_split_digests,
)
from iqa_cli.train.metrics import summary_metrics, unmeasured_summary_problem
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.runs import RESULT_FILE, effective_status, find_run, read_run
from iqa_cli.train.trainer import load_run_config, result_options, selection_label

log = logging.getLogger(__name__)


def combine_runs(runs: Sequence[str | Path]) -> dict[str, Any]:
    """The report of the splits of `runs` (names or folders) as one protocol; see the module's text."""
    roots = [find_run(run) for run in runs]
    infos = [read_run(root) for root in roots]
    check_one_protocol(roots, infos)
    results = {root: _result_rows(root) for root in roots}
    split_owners({root: [str(row["split"]) for row in rows] for root, rows in results.items()})
    rows = [{**row, "run": root.name} for root, found in results.items() for row in found]
    rows.sort(key=lambda row: _split_order(str(row["split"])))
    first_info = infos[0]
    recipe = get_recipe(str(first_info.get("method")))
    problem = unmeasured_summary_problem([row for row in rows if row.get("n")], recipe.report_metrics[0])
    if problem:
        raise DataError(f"{problem}; the combined runs are no result")
    return {
        "method": recipe.name,
        "dataset": first_info.get("dataset"),
        "runs": [str(root) for root in roots],
        "selected_on": first_info.get("selected_on"),
        "selection": selection_label(str(first_info.get("selected_on"))),
        "splits": rows,
        **summary_metrics(rows, recipe.metric_names),
        "columns": list(recipe.report_metrics),
    }


def check_one_protocol(roots: Sequence[Path], infos: Sequence[dict[str, Any]]) -> None:
    """Refuse runs that are fewer than two, given twice, unfinished, or not of one protocol (method,
    data, options)."""
    if len(roots) < 2:
        raise ConfigError("give two or more runs to combine (one run's report is `iqa runs show`)")
    seen: dict[Path, Path] = {}
    for root in roots:
        if root.resolve() in seen:
            raise ConfigError(f"{root} is given twice (as {seen[root.resolve()]})")
        seen[root.resolve()] = root
    for root, info in zip(roots, infos, strict=True):
        status = effective_status(info)
        if status != "complete":
            raise DataError(f"the run is {status}, not complete: finish it (`iqa train --resume`) first", path=root)
    for root, info in zip(roots[1:], infos[1:], strict=True):
        why = _difference(roots[0], infos[0], root, info)
        if why:
            raise ConfigError(f"{root} is not of the same protocol as {roots[0]}: {why}; only such runs combine")
    _check_one_split_set(roots, infos)


def _check_one_split_set(roots: Sequence[Path], infos: Sequence[dict[str, Any]]) -> None:
    """Refuse runs whose caches hold other splits under the same names (the same images prepared with another
    `--split-seed` or `--test-fraction`): their `random_0` and `random_1` are not two splits of one set, and
    one may even be the other's `random_5`. The authors' splits (`vtiqa_chain_K`, ...) follow from the images
    alone, which `cache_identity` already compared."""
    known = [_split_digests(info) for info in infos]
    compared: list[set[str]] = [set() for _ in roots]
    for a in range(len(roots)):
        for b in range(a + 1, len(roots)):
            common = set(known[a].digests) & set(known[b].digests)
            compared[a] |= common
            compared[b] |= common
            differ = sorted(name for name in common if known[a].digests[name] != known[b].digests[name])
            if differ:
                raise ConfigError(
                    f"{roots[b]} is not of the same protocol as {roots[a]}: their caches hold other images under "
                    f"split {differ[0]} (prepared with another --split-seed or --test-fraction), so their splits "
                    "are not one protocol's; only runs on one cache's splits combine"
                )
    unchecked = [
        str(root)
        for root, split_set, seen in zip(roots, known, compared, strict=True)
        if not split_set.complete and any(not is_protocol_split(s) and s not in seen for s in split_set.trained)
    ]
    if unchecked:
        log.warning(
            f"which splits {some_names(unchecked)} trained cannot be checked against the other runs' (their caches "
            "are gone or prepared again, and their records predate it): combine them only if every run used one "
            "cache's splits"
        )


class SplitSet(NamedTuple):
    """What a run knows of its cache's splits: name -> digest, whether that is every stored split, and the
    splits it trained."""

    digests: dict[str, str]
    complete: bool
    trained: list[str]


def _split_digests(info: dict[str, Any]) -> SplitSet:
    """The run's cache's stored splits when it started (`stored_splits`) and its trained splits; for runs
    recorded before `stored_splits`, its cache's splits when the cache still holds what it trained."""
    trained = trained_split_digests(info)
    if isinstance(info.get("stored_splits"), dict):
        return SplitSet(recorded_split_digests(info), True, list(trained))
    now = _cache_split_digests(Path(str(info.get("cache"))))
    if now is None or any(name in now and now[name] != digest for name, digest in trained.items()):
        return SplitSet(trained, False, list(trained))  # the cache is gone, or was prepared again since
    return SplitSet({**now, **trained}, True, list(trained))


def _cache_split_digests(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    try:
        dataset, _ = open_dataset(path)
    except (DataError, OSError):
        return None
    try:
        return stored_split_digests(dataset)
    finally:
        close_dataset(dataset)


def split_owners(splits_of: dict[Path, list[str]]) -> dict[str, Path]:
    """split -> the run that trained it; a split in two runs, a whole-dataset round, or splits of two
    schemes (`random_1` beside `vtiqa_chain_2`: other test parts, other sizes) are refused."""
    owner: dict[str, Path] = {}
    families: dict[str, tuple[str, Path]] = {}
    for root, splits in splits_of.items():
        for split in splits:
            if split in owner:
                raise ConfigError(
                    f"split {split} is in two runs, {owner[split]} and {root}: a median would count it twice; "
                    "leave one out"
                )
            if is_whole_split(split):  # its figures are the watched datasets', which are not joined here
                raise ConfigError(
                    f"{root} trained whole-dataset round {split}, which tests nothing: only runs of train/test "
                    "splits combine"
                )
            owner[split] = root
            families.setdefault(split_family(split), (split, root))
    if len(families) > 1:
        shown = [f"{split} ({root})" for split, root in families.values()]
        raise ConfigError(
            f"the runs trained splits of {len(families)} schemes: {some_names(shown)}; a median over them is no one "
            "protocol's: combine runs of one scheme"
        )
    return owner


def _result_rows(root: Path) -> list[dict[str, Any]]:
    try:
        report = json.loads((root / RESULT_FILE).read_text(encoding="utf-8"))
        rows = report["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"no readable {RESULT_FILE} (the run's report)", path=root) from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) and "split" in row for row in rows):
        raise DataError(f"{RESULT_FILE} lists no splits", path=root)
    return rows


def _difference(root_a: Path, a: dict[str, Any], root_b: Path, b: dict[str, Any]) -> str | None:
    """Why runs `a` and `b` (their run.json records) are not of one protocol, or None."""
    if a.get("method") != b.get("method"):
        return f"method {b.get('method')!r}, not {a.get('method')!r}"
    identity_a, identity_b = a.get("cache_identity"), b.get("cache_identity")
    if isinstance(identity_a, dict) and isinstance(identity_b, dict):
        if not same_cache_identity(identity_a, identity_b):
            return f"trained on other data ({b.get('cache')}: other images, scores or size than {a.get('cache')})"
    elif Path(str(a.get("cache"))).resolve() != Path(str(b.get("cache"))).resolve():
        return f"trained on another cache ({b.get('cache')}, not {a.get('cache')})"
    recipe = get_recipe(str(a.get("method")))
    config_a, config_b = (load_run_config(recipe, root)[1] for root in (root_a, root_b))
    choices_b = run_choices(b, root_b)  # iqa may have made other labels or views of the same cache for each
    changed = (
        choices_change(run_choices(a, root_a), choices_b, config_a.params, now_word="not")
        if choices_b is not None
        else None
    )
    if changed:
        return f"trained with {changed}"
    other_inputs = changed_inputs(a.get("data_identity") or {}, b.get("data_identity") or {})
    if other_inputs:  # e.g. IEIT's enhanced images, made again between the runs
        return f"trained with other {inputs_text(other_inputs)}"
    options_a, options_b = result_options(config_a), result_options(config_b)
    differ = sorted(key for key in options_a.keys() | options_b.keys() if options_a.get(key) != options_b.get(key))
    if differ:
        shown = [f"{key} {options_b.get(key)!r} (not {options_a.get(key)!r})" for key in differ]
        return f"other options: {some_names(shown)}"
    return None


def split_family(name: str) -> str:
    """The scheme a split belongs to: `random_3` -> `random`, `vtiqa_chain_2` -> `vtiqa_chain`, `official`."""
    return _split_order(name)[0].rstrip("_")


def _split_order(name: str) -> tuple[str, int, str]:
    """`random_2` before `random_10`."""
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2)), "") if match else (name, -1, name)
