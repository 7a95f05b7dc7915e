"""`iqa prepare distorted` and `iqa prepare merge`: the synthetic distortion set of VIPNet's DPM pretraining
(argument parsing only; the work is in `iqa_cli.distort`).

`register(prepare_app)` adds both commands to the `iqa prepare` group.
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from iqa_cli.atomic import check_output_file
from iqa_cli.cli.checks import given, not_into_standard_output, open_fraction
from iqa_cli.cli.console import ConsoleProgress, err, out, print_json
from iqa_cli.data.splits import MAX_SPLITS
from iqa_cli.seeds import MAX_SEED

_TYPES_HELP = "Distortion types to generate, e.g. 1,2,5-9 (default: all 30; `--list-types` shows them)."
_LEVELS_HELP = "Levels to generate, e.g. 1-5 or 1,3,5 (default: all five)."
_PER_REF_HELP = "Types drawn (seeded, without replacement) for each reference (default: every selected type)."
_SIZE_HELP = "Every reference is resized to WxH first (bicubic); default 512x384, the KADIS-700k size."
_WORKERS_HELP = "Worker processes (default: all cores; 1 = in this process)."
_RESUME_HELP = "Continue an interrupted run of the same --out from its last checkpoint (same references and options)."
_SHARD_HELP = "Write only part i of n (1-based) of the references, e.g. 3/8 for cluster job 3 of 8; join the parts "
_SHARD_HELP += "with `iqa prepare merge`."
_PREVIEW_HELP = "Only write a PNG grid of the first reference under every selected type (rows) and level (columns)."
_SPLITS_HELP = "Reference-disjoint train/test splits to store (0 = none)."
_SEED_HELP = "Seed of the first split; split k uses seed + k."
_FRACTION_HELP = "Share of references in each test part (VIPNet held out ~0.8% of its images for validation)."


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns


def _print_types() -> None:
    from iqa_cli.distort.registry import TYPES

    for t in TYPES.values():
        levels = ", ".join(str(v) for v in t.levels)
        note = f"  [{t.substitute}]" if t.substitute else ""
        out.print(f"{t.id:2d}  {t.slug:24s} {t.parameter}: {levels}{note}", markup=False, highlight=False)


def distorted(
    ctx: typer.Context,
    refs: Path = typer.Option(None, "--refs", help="Folder of pristine images (recursive), or a KADIS-700k folder."),
    out_path: Path = typer.Option(None, "--out", help="Cache to write, .h5 (default: $IQA_HOME/data/distorted.h5)."),
    types: str = typer.Option(None, "--types", help=_TYPES_HELP),
    levels: str = typer.Option(None, "--levels", help=_LEVELS_HELP),
    seed: int = typer.Option(
        0, "--seed", min=0, max=MAX_SEED, help="Seed of every random choice; the same seed gives the same pixels."
    ),
    per_ref: int = typer.Option(None, "--per-ref", help=_PER_REF_HELP),
    size: str = typer.Option("512x384", "--size", help=_SIZE_HELP),
    workers: int = typer.Option(None, "--workers", min=1, help=_WORKERS_HELP),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    shard: str = typer.Option(None, "--shard", help=_SHARD_HELP),
    preview: Path = typer.Option(None, "--preview", help=_PREVIEW_HELP),
    splits: int = typer.Option(1, "--splits", min=0, max=MAX_SPLITS, help=_SPLITS_HELP),
    split_seed: int = typer.Option(0, "--split-seed", min=0, max=MAX_SEED, help=_SEED_HELP),
    test_fraction: float = typer.Option(0.01, "--test-fraction", callback=open_fraction, help=_FRACTION_HELP),
    refs_list: Path = typer.Option(
        None, "--refs-list", help="VIPNet's dataset_ref_img.csv: the references of every type but 27 (in --refs)."
    ),
    refs_list_27: Path = typer.Option(
        None,
        "--refs-list-27",
        help="VIPNet's dataset_ref_img_140k.csv: walked in order for type 27 (needs --refs-list).",
    ),
    walk_target: int = typer.Option(
        40000,
        "--walk-target",
        min=1,
        help="With --refs-list: type 27 stops once this many references succeed (authors: 40000).",
    ),
    list_types: bool = typer.Option(False, "--list-types", help="List the 30 types and their level parameters."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON document on stdout."),
) -> None:
    """Generate VIPNet's 30 synthetic distortion types x 5 levels from pristine references into a labelled cache.

    Labels: dist_type, level and the DPM class (type-1)*5 + (level-1). Runs in parallel worker processes,
    checkpoints every few seconds (`--resume` continues), and shards for clusters (`--shard i/n`).
    """
    from iqa_cli.distort.registry import NUM_TYPES, parse_selection
    from iqa_cli.errors import ConfigError

    if list_types:
        _print_types()
        return
    if refs is None:
        raise ConfigError("--refs is required: a folder of pristine reference images")

    from iqa_cli.distort.base import NUM_LEVELS
    from iqa_cli.distort.generate import DistortOptions, generate_distorted, load_reference, parse_shard, parse_size
    from iqa_cli.distort.refs import authors_reference_lists, list_references, shard_range
    from iqa_cli.home import data_dir, default_cache_path

    type_ids = parse_selection(types, NUM_TYPES, "types")
    level_ids = parse_selection(levels, NUM_LEVELS, "levels")
    not_into_standard_output(preview, "--preview", json_output=json_output)
    main_count = 0
    if refs_list_27 is not None and refs_list is None:
        raise ConfigError("--refs-list-27 walks VIPNet's second list; give the first with --refs-list too")
    if refs_list is None and given(ctx, "walk_target"):
        raise ConfigError(
            "--walk-target: how far type 27 walks VIPNet's lists, and no --refs-list was given; leave it out"
        )
    if refs_list is not None:
        references, main_count = authors_reference_lists(refs, refs_list, refs_list_27)
    else:
        references = list_references(refs)
    shard_ix = parse_shard(shard)
    if preview is not None:
        from iqa_cli.distort.preview import write_preview

        start, stop = shard_range(len(references), shard_ix)
        if stop <= start:
            raise ConfigError(f"--shard {shard} gets no references (there are only {len(references)})")
        image = load_reference(references[start].path, parse_size(size))
        path = write_preview(preview, image, type_ids, level_ids, seed=seed, ref_id=start)
        if json_output:
            print_json({"preview": str(path), "reference": references[start].name, "types": type_ids,
                        "levels": level_ids})  # fmt: skip
        else:
            out.print(f"wrote {path} ({references[start].name})", markup=False, highlight=False)
        return

    if out_path is None:
        index, total = shard_ix
        out_path = default_cache_path("distorted") if total == 1 else data_dir() / f"distorted.part{index}of{total}.h5"
    check_output_file(out_path, "--out")  # before the work
    if out_path.exists() and not resume:
        err.print(f"{out_path} exists; it is replaced once the new cache is complete", markup=False, highlight=False)
    summary = generate_distorted(
        references,
        out_path,
        DistortOptions(
            types=type_ids,
            levels=level_ids,
            seed=seed,
            per_ref=per_ref,
            workers=workers,
            resume=resume,
            shard=shard_ix,
            size=size,
            splits=splits,
            split_seed=split_seed,
            test_fraction=test_fraction,
            source_root=refs,
            main_count=main_count,
            walk_target=walk_target if main_count else 0,
        ),
        progress=ConsoleProgress(),
    )
    if json_output:
        print_json(summary.to_dict())
        return
    info = summary.to_dict()
    rate = (
        f"{info['images_per_second']:.1f} images/s, {info['images_per_second_per_worker']:.2f} per worker"
        if summary.generated and math.isfinite(summary.images_per_second)
        else "nothing left to generate"
    )
    line = (
        f"wrote {summary.count} images of {summary.references} references (shard {info['shard']}) to "
        f"{summary.path} ({_human_bytes(summary.bytes)}) in {summary.seconds:.1f} s ({rate})"
    )
    if summary.resumed_references:
        line += f"; resumed after {summary.resumed_references} references"
    if summary.walk_succeeded is not None:
        line += f"; type 27 from {summary.walk_succeeded} references (walk target {walk_target})"
    if summary.not_applicable:
        line += f"; {summary.not_applicable} reference/type pairs not applicable (type 27 needs all 5 PSNR levels)"
    out.print(line, markup=False, highlight=False, soft_wrap=True)


def merge(
    parts: list[Path] = typer.Argument(..., help="Part caches written with `iqa prepare distorted --shard i/n`."),
    out_path: Path = typer.Option(..., "--out", help="The merged cache to write, named .h5."),
    splits: int = typer.Option(1, "--splits", min=0, max=MAX_SPLITS, help=_SPLITS_HELP),
    split_seed: int = typer.Option(0, "--split-seed", min=0, max=MAX_SEED, help=_SEED_HELP),
    test_fraction: float = typer.Option(0.01, "--test-fraction", callback=open_fraction, help=_FRACTION_HELP),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Merge parts that leave references out (default: refuse, naming the gaps)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON document on stdout."),
) -> None:
    """Join the shards of a distorted set into one cache (same images and labels as one unsharded run)."""
    from iqa_cli.distort.merge import merge_parts

    check_output_file(out_path, "--out")  # before the parts are read
    summary = merge_parts(
        parts,
        out_path,
        splits=splits,
        split_seed=split_seed,
        test_fraction=test_fraction,
        allow_partial=allow_partial,
        progress=ConsoleProgress(),
    )
    if json_output:
        print_json(summary.to_dict())
        return
    coverage = (
        "all references"
        if summary.complete
        else f"references {summary.reference_range[0]}..{summary.reference_range[1]}"
    )
    out.print(
        f"merged {summary.parts} parts ({summary.count} images, {coverage}) into {summary.path} "
        f"({_human_bytes(summary.bytes)}) in {summary.seconds:.1f} s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def register(prepare_app: typer.Typer) -> None:
    """Add `distorted` and `merge` to the `iqa prepare` group."""
    prepare_app.command("distorted")(distorted)
    prepare_app.command("merge")(merge)
