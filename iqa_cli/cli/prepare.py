"""`iqa prepare`: pack an official dataset download into an HDF5/NPZ cache (argument parsing only; the
work is in `iqa_cli.data`).

One command per registered dataset (`iqa prepare livew --root DIR`, generated from the registry so a
new dataset module appears here by itself; aliases work as hidden commands), `custom` for any folder
plus a CSV, `inspect` / `list`, and `enhance` (IEIT's intermediary images beside a cache; also `--enhance`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from iqa_cli.cli.checks import not_into_standard_output, open_fraction
from iqa_cli.cli.console import ConsoleProgress, err, out, print_json, write_stdout
from iqa_cli.cli.prepare_distorted import register as register_distorted
from iqa_cli.cli.prepare_enhance import (
    CLASSIFIER_HELP,
    DEFAULT_CLASSIFIER,
    ENHANCE_HELP,
    ROOT_HELP,
    SELECTION_HELP,
    EnhanceRequest,
    enhanced_line,
)
from iqa_cli.cli.prepare_enhance import register as register_enhance
from iqa_cli.data.records import DatasetSpec
from iqa_cli.data.splits import MAX_SPLITS
from iqa_cli.errors import ConfigError
from iqa_cli.fsnames import printable
from iqa_cli.seeds import MAX_SEED

if TYPE_CHECKING:
    from iqa_cli.data.cache import CacheOptions

app = typer.Typer(
    rich_markup_mode=None,
    help="Pack an official dataset download into a fast uint8 cache ($IQA_HOME/data/<dataset>.h5).",
    no_args_is_help=True,
)

_SKIPPED_SHOWN = 20  # skipped files listed on the terminal; all of them are in the cache and --json


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - loop always returns


def _print_columns(lines: Sequence[tuple[str, ...]]) -> None:
    """Plain aligned columns: readable at any terminal width and greppable in logs."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        text = "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        out.print(text, markup=False, highlight=False, soft_wrap=True)


def _cache_options(values: dict[str, Any]) -> CacheOptions:
    """A prepare command's `CacheOptions`, taken by name from its parameters (the flags are named after
    the fields; `--size`/`--short-side` are resolved against the dataset by `_build`)."""
    from dataclasses import fields

    from iqa_cli.data.cache import CacheOptions

    return CacheOptions(**{f.name: values[f.name] for f in fields(CacheOptions) if f.name in values})


def _build(
    spec: DatasetSpec,
    root: Path,
    out_path: Path | None,
    options: CacheOptions,
    *,
    size: str | None,
    short_side: int | None,
    json_output: bool,
    enhancement: EnhanceRequest | None = None,
) -> None:
    """Build the cache (`--size`/`--short-side` fill in `options.resize`) and print what was written."""
    from iqa_cli.atomic import check_output_file
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.cache_format import check_replaceable, resolve_format
    from iqa_cli.data.resize import policy_from_options
    from iqa_cli.home import default_cache_path

    fmt = resolve_format(options.fmt, out_path)
    policy = policy_from_options(size, short_side, spec.default_resize)
    options = dataclasses.replace(options, fmt=fmt, resize=policy)
    target = out_path if out_path is not None else default_cache_path(spec.name, fmt)
    check_output_file(target, "--out")  # before the work
    check_replaceable(target)
    if enhancement is not None:
        enhancement.check()  # a missing classifier fails now, not after the whole cache is built
    if target.exists():
        err.print(f"{target} exists; it is replaced only if the new cache is completed", markup=False, highlight=False)
    summary = build_cache(
        spec,
        root,
        target,
        options,
        progress=ConsoleProgress(),
    )
    if summary.skipped:
        err.print(f"warning: skipped {len(summary.skipped)} image(s):", markup=False, highlight=False)
        for name, reason in summary.skipped[:_SKIPPED_SHOWN]:
            err.print(f"  {name}: {reason}", markup=False, highlight=False)
        if len(summary.skipped) > _SKIPPED_SHOWN:
            err.print(
                f"  ... and {len(summary.skipped) - _SKIPPED_SHOWN} more (all are listed by `iqa prepare inspect`)"
            )
    enhanced = enhancement.run(summary.path) if enhancement is not None else None
    if json_output:
        print_json(summary.to_dict() | ({"enhanced": enhanced.to_dict()} if enhanced is not None else {}))
        return
    rate = f"{summary.images_per_second:.1f} images/s" if math.isfinite(summary.images_per_second) else "-"
    shape = "x".join(str(s) for s in summary.shape)
    line = (
        f"wrote {summary.count} images ({shape}, resize {summary.resize}) to {summary.path} "
        f"({_human_bytes(summary.bytes)}) in {summary.seconds:.1f} s ({rate})"
    )
    if summary.skipped:
        line += f"; skipped {len(summary.skipped)}"
    out.print(line, markup=False, highlight=False, soft_wrap=True)
    if enhanced is not None:
        out.print(enhanced_line(enhanced), markup=False, highlight=False, soft_wrap=True)


# --- options shared by every dataset command ---------------------------------------------------------

_ROOT_HELP = "The dataset folder as unpacked from its official download (metadata is searched below it)."
_OUT_HELP = "Cache file to write, named .h5, .hdf5 or .npz (default: $IQA_HOME/data/<dataset>.<format>)."
_FORMAT_HELP = "h5 (HDF5, default) or npz; inferred from --out's suffix when not given."
_WORKERS_HELP = "Decoding processes (default: all cores)."
_SKIP_HELP = (
    "Skip missing or unreadable images (listed, and counted in the cache) instead of stopping. "
    "A malformed score in the metadata always stops: it is a broken file, not a broken image."
)
_SPLITS_HELP = "Number of seeded random train/test splits to store (0 = none)."
_SEED_HELP = "Seed of the first random split; split k uses seed + k."
_FRACTION_HELP = "Share of images (of references, for reference-disjoint datasets) in each test part."
_JSON_HELP = "Print the summary as one JSON document on stdout."
_PADDING_HELP = "Write the cache even when zero padding makes it many times larger than its images."
_RANGE_HELP = "Keep scores outside the dataset's declared range (an error otherwise: usually a wrong column)."


def _size_help(spec: DatasetSpec) -> str:
    return (
        f"Stored size: WxH (e.g. 244x244), or none to keep originals (default for {spec.name}: {spec.default_resize})."
    )


_SHORT_HELP = "Resize so the shorter side is S pixels, keeping the aspect ratio (instead of --size)."


def _dataset_help(spec: DatasetSpec) -> str:
    expects = "; ".join(spec.expects) or "see the documentation"
    low, high = spec.native_range
    direction = "lower is better" if spec.lower_better else "higher is better"
    extra = " Splits are reference-disjoint." if spec.reference_disjoint else ""
    return (
        f"{spec.title}: {spec.score_type} {low:g}-{high:g}, {direction}. Expects: {expects}. "
        f"Default size: {spec.default_resize}.{extra}"
    )


def _dataset_command(spec: DatasetSpec) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        root: Path = typer.Option(..., "--root", help=_ROOT_HELP, file_okay=False),
        out_path: Path = typer.Option(None, "--out", "-o", help=_OUT_HELP, dir_okay=False),
        fmt: str = typer.Option(None, "--format", help=_FORMAT_HELP),
        size: str = typer.Option(None, "--size", help=_size_help(spec)),
        short_side: int = typer.Option(None, "--short-side", min=1, help=_SHORT_HELP),
        workers: int = typer.Option(None, "--workers", "-j", min=1, help=_WORKERS_HELP),
        skip_bad: bool = typer.Option(False, "--skip-bad", help=_SKIP_HELP),
        splits: int = typer.Option(10, "--splits", min=0, max=MAX_SPLITS, help=_SPLITS_HELP),
        split_seed: int = typer.Option(0, "--split-seed", min=0, max=MAX_SEED, help=_SEED_HELP),
        test_fraction: float = typer.Option(0.2, "--test-fraction", callback=open_fraction, help=_FRACTION_HELP),
        json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
        enhance: bool = typer.Option(False, "--enhance", help=ENHANCE_HELP),
        enhanced_root: Path = typer.Option(None, "--enhanced-root", help=ROOT_HELP, file_okay=False),
        selection: bool = typer.Option(True, "--selection/--no-selection", help=SELECTION_HELP),
        classifier: str = typer.Option(DEFAULT_CLASSIFIER, "--classifier", help=CLASSIFIER_HELP),
        allow_out_of_range: bool = typer.Option(False, "--allow-out-of-range", help=_RANGE_HELP),
        allow_padding: bool = typer.Option(False, "--allow-padding", help=_PADDING_HELP),
    ) -> None:
        options = _cache_options(locals())
        _build(
            spec,
            root,
            out_path,
            options,
            size=size,
            short_side=short_side,
            json_output=json_output,
            enhancement=EnhanceRequest.make(ctx, enhance, enhanced_root, selection, classifier),
        )

    command.__doc__ = _dataset_help(spec)
    return command


def _parse_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    parts = text.replace(":", ",").split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"invalid --range {text!r} (expected LO,HI such as 0,100)") from None
    return low, high


def _custom_command(spec: DatasetSpec) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        root: Path = typer.Option(..., "--root", help="Folder holding the images named in the CSV.", file_okay=False),
        csv_path: Path = typer.Option(
            None,
            "--csv",
            help="CSV of name,score,std (std and header optional; tab- or ;-separated files are read too; default: "
            "the only .csv in --root).",
        ),
        name: str = typer.Option("custom", "--name", help="Dataset name: the cache file name and `--data` name."),
        columns: str = typer.Option(
            None,
            "--columns",
            help="The header's columns to read: NAME,SCORE[,STD] (e.g. image_name,MOS_zscore,SD); needed when the "
            "header names several score columns or none.",
        ),
        references: str = typer.Option(
            None,
            "--references",
            help="The header column naming each image's reference (the photo it was distorted from, e.g. "
            "ref_img): splits keep each reference's images on one side, and a value naming a file below --root "
            "keeps its digest.",
        ),
        score_type: str = typer.Option(
            None,
            "--score-type",
            help="What the scores are (MOS, DMOS, ...). Default: DMOS with --lower-better, else MOS.",
        ),
        score_range: str = typer.Option(
            None, "--range", help="Declared score range LO,HI (default: the observed min and max)."
        ),
        lower_better: Optional[bool] = typer.Option(  # noqa: UP045
            None,
            "--lower-better/--higher-better",
            help="Lower (a DMOS) or higher scores mean better quality. Default: higher; a score column or "
            "--score-type named DMOS needs one of them.",
            show_default=False,
        ),
        out_path: Path = typer.Option(None, "--out", "-o", help=_OUT_HELP, dir_okay=False),
        fmt: str = typer.Option(None, "--format", help=_FORMAT_HELP),
        size: str = typer.Option(None, "--size", help=_size_help(spec)),
        short_side: int = typer.Option(None, "--short-side", min=1, help=_SHORT_HELP),
        workers: int = typer.Option(None, "--workers", "-j", min=1, help=_WORKERS_HELP),
        skip_bad: bool = typer.Option(False, "--skip-bad", help=_SKIP_HELP),
        splits: int = typer.Option(10, "--splits", min=0, max=MAX_SPLITS, help=_SPLITS_HELP),
        split_seed: int = typer.Option(0, "--split-seed", min=0, max=MAX_SEED, help=_SEED_HELP),
        test_fraction: float = typer.Option(0.2, "--test-fraction", callback=open_fraction, help=_FRACTION_HELP),
        json_output: bool = typer.Option(False, "--json", help=_JSON_HELP),
        enhance: bool = typer.Option(False, "--enhance", help=ENHANCE_HELP),
        enhanced_root: Path = typer.Option(None, "--enhanced-root", help=ROOT_HELP, file_okay=False),
        selection: bool = typer.Option(True, "--selection/--no-selection", help=SELECTION_HELP),
        classifier: str = typer.Option(DEFAULT_CLASSIFIER, "--classifier", help=CLASSIFIER_HELP),
        allow_out_of_range: bool = typer.Option(False, "--allow-out-of-range", help=_RANGE_HELP),
        allow_padding: bool = typer.Option(False, "--allow-padding", help=_PADDING_HELP),
    ) -> None:
        """Your own images: any folder plus a CSV of name,score[,std] (header optional). Default size: none."""
        from iqa_cli.data.datasets._files import check_root
        from iqa_cli.data.datasets.custom import make_spec

        checked_root = check_root(root)
        custom = make_spec(
            name,
            csv_path,
            root=checked_root,
            score_type=score_type,
            native_range=_parse_range(score_range),
            lower_better=lower_better,
            columns=columns,
            references=references,
        )
        options = _cache_options(locals())
        _build(
            custom,
            checked_root,
            out_path,
            options,
            size=size,
            short_side=short_side,
            json_output=json_output,
            enhancement=EnhanceRequest.make(ctx, enhance, enhanced_root, selection, classifier),
        )

    return command


# --- inspect / list --------------------------------------------------------------------------------------


@app.command("list")
def list_datasets(json_output: bool = typer.Option(False, "--json", help="Print one JSON list on stdout.")) -> None:
    """The datasets `iqa prepare` knows: title, score type and range, default size, the files each expects."""
    from iqa_cli.data.datasets import all_datasets

    rows: list[dict[str, Any]] = []
    for spec in all_datasets().values():
        low, high = spec.native_range
        known = math.isfinite(low) and math.isfinite(high)
        rows.append(
            {
                "name": spec.name,
                "title": spec.title,
                "score_type": spec.score_type,
                "native_range": [low, high] if known else None,
                "lower_better": spec.lower_better,
                "default_resize": spec.default_resize,
                "reference_disjoint": spec.reference_disjoint,
                "expects": list(spec.expects),
                "aliases": list(spec.aliases),
            }
        )
    if json_output:
        print_json(rows)
        return
    lines = [("DATASET", "SCORE", "RANGE", "BETTER", "SIZE", "TITLE")]
    for row in rows:
        span = "from data" if row["native_range"] is None else "{:g}-{:g}".format(*row["native_range"])
        lines.append(
            (
                row["name"],
                row["score_type"],
                span,
                "lower" if row["lower_better"] else "higher",
                row["default_resize"],
                row["title"],
            )
        )
    _print_columns(lines)
    out.print("")
    for row in rows:
        aliases = f" (also: {', '.join(row['aliases'])})" if row["aliases"] else ""
        out.print(f"{row['name']}{aliases} expects:", markup=False, highlight=False)
        for item in row["expects"]:
            out.print(f"  {item}", markup=False, highlight=False)


@app.command("inspect")
def inspect_cache(
    cache: str = typer.Argument(..., help="A cache file, or a dataset name prepared into $IQA_HOME/data."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="List the train and test image names of this split (stored, e.g. random_0, or computed: "
        "authors_prep, vtiqa_chain_K, ieit_chain_K, shuffle_S, vipnet_K)",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    plot: Path = typer.Option(None, "--plot", help="Draw the score histogram to this .png or .svg file."),
) -> None:
    """What a cache holds: counts, shapes, score range and mean, std availability, size policy, splits, attributes.
    With --split: the names of the images in each part of that split."""
    from iqa_cli.data.cache import describe_cache, open_cache, split_members
    from iqa_cli.home import resolve_cache

    not_into_standard_output(plot, "--plot", json_output=json_output)
    with open_cache(resolve_cache(cache)) as opened:
        if plot is not None:
            from iqa_cli.plots import histogram

            kind = opened.attrs.get("score_type") or "score"
            histogram(plot, opened.scores, title=f"{opened.attrs.get('dataset')}: {len(opened)} images", xlabel=kind)
            err.print(f"histogram written to {plot}", markup=False, highlight=False)
        if split is not None:
            members = split_members(opened, split)
            if json_output:
                print_json(members)
            else:
                # Plain tab-separated lines (rich would expand the tab): `cut -f2` gives the names.
                listed = (f"{part}\t{printable(name)}\n" for part, names in members.items() for name in names)
                write_stdout("".join(listed))  # a name's own tab or newline escaped: one line per image
            return
        info = describe_cache(opened)
    if json_output:
        print_json(info)
        return
    images, scores = info["images"], info["scores"]
    lines = [
        ("file", f"{info['path']} ({info['format']}, {_human_bytes(info['bytes'])})"),
        ("dataset", f"{info['dataset']}: {info['attrs'].get('title', '')}"),
        ("images", f"{info['count']} x {'x'.join(str(s) for s in images['shape'][1:])} {images['dtype']}"),
        ("resize", str(info["resize"])),
    ]
    if info["count"]:
        lines.append(
            (
                "sizes",
                f"h {images['height'][0]}-{images['height'][1]}, w {images['width'][0]}-{images['width'][1]}"
                + (" (zero-padded, see `sizes`)" if images["padded"] else ""),
            )
        )
        if scores["not_finite"]:
            values = f"{scores['not_finite']} of {info['count']} not finite (training refuses this cache)"
        else:
            values = f"min {scores['min']:.4g}, max {scores['max']:.4g}, mean {scores['mean']:.4g}"
        lines.append(
            (
                "scores",
                f"{scores['type']} {values} (declared range {scores['native_range']}, "
                f"{'lower' if scores['lower_better'] else 'higher'} is better)",
            )
        )
    lines.append(("std", f"{info['std_available']} of {info['count']} images"))
    if info.get("mos_zscore"):
        zscore = info["mos_zscore"]
        lines.append(("MOS_zscore", f"min {zscore['min']:.4g}, max {zscore['max']:.4g} (VIPNet's KonIQ label)"))
    if info["references"]:
        files = info.get("reference_files")
        if files is None:
            known = " (their files unknown: prepared before iqa recorded them)"
        elif files < info["references"]:
            known = f" ({files} with their file's digest; the others' files were not found when it was prepared)"
        else:
            known = f" ({files} with their file's digest)"
        lines.append(("references", f"{info['references']}{known}"))
    if info["training_images"]:
        lines.append(
            (
                "training images",
                f"{info['training_images']} flagged (LIVE Challenge's subject-training images: in the authors' "
                "splits, not in the random ones)",
            )
        )
    lines.append(("skipped", str(info["skipped"])))
    copies = info["identical_files"]
    lines.append(
        (
            "identical files",
            "unknown (prepared before iqa recorded file digests)"
            if copies is None
            else f"{sum(len(group) - 1 for group in copies)} copies in {len(copies)} sets (listed below)"
            if copies
            else "none",
        )
    )
    split_attrs = info["split_attrs"]
    if info["splits"]:
        lines.append(
            (
                "splits",
                f"{len(info['splits'])} (seed {split_attrs.get('seed')}, "
                f"test fraction {split_attrs.get('test_fraction')}, "
                f"reference-disjoint {split_attrs.get('reference_disjoint')})",
            )
        )
        for name, parts in info["splits"].items():
            lines.append((f"  {name}", ", ".join(f"{part} {count}" for part, count in parts.items())))
    else:
        lines.append(("splits", "none"))
    shown = {"dataset", "title", "resize", "skipped_names", "identical_files"}
    for key, value in info["attrs"].items():
        if key not in shown:
            lines.append((f"attr {key}", str(value)))
    _print_columns(lines)
    if info["skipped_names"]:
        out.print("skipped images:", markup=False)
        for name in info["skipped_names"]:
            out.print(f"  {printable(name)}", markup=False, highlight=False)
    if copies:
        out.print("byte-identical files (each set on one side of every random split):", markup=False)
        for group in copies:
            out.print(f"  {' = '.join(map(printable, group))}", markup=False, highlight=False)


def _register_datasets() -> None:
    from iqa_cli.data.datasets import all_datasets

    for spec in all_datasets().values():
        command = _custom_command(spec) if spec.name == "custom" else _dataset_command(spec)
        help_text = command.__doc__ or _dataset_help(spec)
        app.command(spec.name, help=help_text, short_help=spec.title)(command)
        for alias in spec.aliases:
            app.command(alias, help=help_text, hidden=True)(command)


_register_datasets()
register_enhance(app)
register_distorted(app)
