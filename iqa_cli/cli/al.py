"""`iqa al select`: the images to label next with AL-IQA's selection rule (for labelling by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from iqa_cli.cli.checks import not_into_standard_output
from iqa_cli.cli.console import ConsoleProgress, out, print_json
from iqa_cli.errors import ConfigError
from iqa_cli.seeds import MAX_SEED

app = typer.Typer(
    rich_markup_mode=None, help="Active learning (AL-IQA): choose which images to label next.", no_args_is_help=True
)

CLIP_WEIGHTS = "clip_vit_b16_openai_st"  # iqa_cli.train.recipes.aliqa.CLIP_WEIGHTS (not imported: keeps --help light)
ZERO_SHOT = "zero-shot"  # iqa_cli.train.al.labelling.ZERO_SHOT, likewise


def _zero_shot_weights(pretrained: str | None, *, tiny: bool, weights: str | None) -> str | None:
    """The CLIP weights of zero-shot selection; --pretrained where nothing would read it is refused."""
    if pretrained is None:
        return CLIP_WEIGHTS
    if tiny and pretrained.strip().lower() != "none":
        raise ConfigError("--pretrained: --tiny builds a small network that loads no weights; leave one of them out")
    if weights is not None and weights != ZERO_SHOT:
        raise ConfigError(
            f"--pretrained: the weights of zero-shot selection, and --weights {weights} selects with that model; "
            "leave one of them out"
        )
    return None if pretrained.strip().lower() == "none" else pretrained


@app.command("select")
def select_command(
    out_path: Path = typer.Option(
        ..., "--out", "-o", help="file to write: .txt (names) or .csv (names and the values that chose them)"
    ),
    data: Optional[str] = typer.Option(None, "--data", help="the pool: a prepared cache (name or file)"),  # noqa: UP045
    images: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--images", help="the pool: a folder of images (searched recursively; no scores needed)"
    ),
    labelled: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--labelled", help="names already labelled: .txt, .csv (name column) or .json (names list)"
    ),
    round_: int = typer.Option(1, "--round", help="the round to select for (1-3)"),
    budget: float = typer.Option(25.0, "--budget", help="labelling budget, percent of the pool (5, 10, 25, 80)"),
    weights: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--weights",
        help="the previous round's kept model (file, store name, or an AL-IQA run: its round r-1 model; needed from "
        "round 2), or zero-shot (CLIP's zero-shot signal, round 1's default)",
    ),
    pretrained: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--pretrained",
        help=f"CLIP weights for zero-shot selection (store name or file; none: random) [default: {CLIP_WEIGHTS}]",
    ),
    distances: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--distances", help="distances to distilled images (.mat/.npy/.npz); default: the k-means stand-in"
    ),
    distance_key: Optional[str] = typer.Option(  # noqa: UP045
        None, "--distance-key", help="variable of the --distances file [default: distance]"
    ),
    distance_order: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--distance-order",
        help="column order of the --distances file, which needs one: dataset (this cache's order), or authors "
        "(the authors' cache order [X; Xtest], as in livew_ds.mat)",
    ),
    tiny: bool = typer.Option(False, "--tiny", help="CPU-test-sized network (no pretrained weights)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    batch_size: int = typer.Option(64, "--batch-size", help="images per forward pass"),
    seed: int = typer.Option(
        0, "--seed", min=0, max=MAX_SEED, help="seed of the k-means stand-in (and of untrained prompts)"
    ),
    json_output: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Write the images to label in the given round: the AL-IQA rule of `iqa train aliqa`, outside training.

    Round 1 scores the unlabelled images with zero-shot CLIP; later rounds take the previous round's
    model (--weights, e.g. round-1/best.safetensors of a run, or a model trained on your labels).

    Round sizes come from --budget and the whole pool (labelled or not), as in training.
    """
    from dataclasses import asdict

    from iqa_cli.atomic import TEXT, check_output_file
    from iqa_cli.train.al.labelling import NextBatchOptions, select_next

    table = ("order,index,name,",) if out_path.suffix.lower() == ".csv" else None  # a .txt list has no header
    check_output_file(out_path, "--out", kind=TEXT, headers=table)  # before the images are scored
    not_into_standard_output(out_path, "--out", json_output=json_output)
    options = NextBatchOptions(
        out=out_path,
        data=data,
        images=images,
        labelled=labelled,
        round=round_,
        budget=budget,
        weights=weights,
        pretrained=_zero_shot_weights(pretrained, tiny=tiny, weights=weights),
        distances=distances,
        distance_key=distance_key,
        distance_order=distance_order,
        tiny=tiny,
        device=device,
        batch_size=batch_size,
        seed=seed,
    )
    report = select_next(options, ConsoleProgress())
    if json_output:
        print_json(asdict(report))
        return
    out.print(
        f"round {report.round}/{report.rounds}: {report.count} images to label next, of "
        f"{report.pool - report.labelled} unlabelled ({report.labelled} labelled; "
        f"the plan expects {report.expected_labelled} before this round)",
        markup=False,
        highlight=False,
    )
    out.print(f"uncertainty: {report.uncertainty}", markup=False, highlight=False)
    out.print(f"representativeness: {report.representativeness}", markup=False, highlight=False)
    out.print(f"written to {report.out}", markup=False, highlight=False)
