"""`iqa prepare enhance CACHE`: IEIT's intermediary images and selection rule, stored beside a cache
(argument parsing only; the work is in `iqa_cli.enhance.prepare`).

`register(prepare_app)` adds the command; `EnhanceRequest` carries the same options for
`iqa prepare <dataset> --enhance`, which enhances the cache it has just written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from iqa_cli.cli.checks import given, given_flags
from iqa_cli.cli.console import ConsoleProgress, out, print_json
from iqa_cli.enhance import DEFAULT_CLASSIFIER
from iqa_cli.errors import ConfigError

if TYPE_CHECKING:
    from iqa_cli.enhance.prepare import EnhanceSummary

ENHANCE_HELP = (
    "Also compute IEIT's enhanced images E and its selection rule into <cache>.enhanced.h5 (as `iqa prepare enhance`)."
)
ROOT_HELP = (
    "Take E from your own enhancement tool instead of the built-in one: a folder with one image per cache image "
    "under the same relative name (any image suffix). Implies --enhance."
)
SELECTION_HELP = (
    "Run the selection rule (keep E only where an ImageNet classifier's max softmax does not drop) and store it; "
    "--no-selection skips it (then train with --no-select-enhanced)."
)
CLASSIFIER_HELP = "ImageNet classifier of the selection rule: a weights-store name or a ViT checkpoint file."
DEVICE_HELP = "auto, cpu, cuda or cuda:N (enhancement and classifier)."

_SELECTION_FLAGS = {"selection": "--selection/--no-selection", "classifier": "--classifier"}

__all__ = ["DEFAULT_CLASSIFIER", "EnhanceRequest", "enhanced_line", "register"]


@dataclass(frozen=True)
class EnhanceRequest:
    enhanced_root: Path | None
    selection: bool
    classifier: str
    device: str = "auto"

    @classmethod
    def make(
        cls, ctx: typer.Context, enhance: bool, enhanced_root: Path | None, selection: bool, classifier: str
    ) -> EnhanceRequest | None:
        """The request of `iqa prepare <dataset>`'s options, or None when no enhancement was asked for."""
        if not enhance and enhanced_root is None:
            asked = given_flags(ctx, _SELECTION_FLAGS)
            if asked:
                raise ConfigError(
                    f"{asked[0]}: a setting of IEIT's enhanced images, which are made only with --enhance or "
                    "--enhanced-root; add one, or leave it out"
                )
            return None
        check_classifier_used(ctx, selection)
        return cls(enhanced_root, selection, classifier)

    def check(self) -> None:
        """Fail early (one line) when the selection rule's classifier cannot be found."""
        if self.selection:
            from iqa_cli.enhance.classifier import classifier_file

            classifier_file(self.classifier, switch_off="--no-selection")

    def run(self, cache: str | Path) -> EnhanceSummary:
        from iqa_cli.enhance.prepare import enhance_cache

        return enhance_cache(
            cache,
            enhanced_root=self.enhanced_root,
            selection=self.selection,
            classifier=self.classifier,
            device=self.device,
            progress=ConsoleProgress(),
        )


def check_classifier_used(ctx: typer.Context, selection: bool) -> None:
    """--classifier is the selection rule's: with --no-selection nothing would read it."""
    if not selection and given(ctx, "classifier"):
        raise ConfigError(
            "--classifier: the selection rule's classifier, and --no-selection skips that rule; leave one of them out"
        )


def enhanced_line(summary: EnhanceSummary) -> str:
    made = (
        "taken from " + summary.enhancement.removeprefix("external: ")
        if summary.enhancement.startswith("external:")
        else f"built-in: {summary.brightened} brightened, {summary.deblurred} deblurred"
    )
    rule = (
        f"selection rule keeps {summary.kept} of {summary.count} (classifier {summary.classifier})"
        if summary.selection
        else "selection rule not computed"
    )
    return f"wrote {summary.count} enhanced images to {summary.path} ({made}; {rule}) in {summary.seconds:.1f} s"


def enhance(
    ctx: typer.Context,
    cache: str = typer.Argument(..., help="A cache file, or a dataset name prepared into $IQA_HOME/data."),
    enhanced_root: Path = typer.Option(None, "--enhanced-root", help=ROOT_HELP, file_okay=False),
    selection: bool = typer.Option(True, "--selection/--no-selection", help=SELECTION_HELP),
    classifier: str = typer.Option(DEFAULT_CLASSIFIER, "--classifier", help=CLASSIFIER_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON document on stdout."),
    from_authors: list[Path] = typer.Option(
        None,
        "--from-authors",
        help="the authors' enhanced-image file (X/Xtest, e.g. livew_244_brt_debulr.mat) and, optionally, "
        "their selection file (op_train/op_train2/op_test/op_test2, e.g. livew_prob_compare.npz); give the "
        "option once per file",
    ),
) -> None:
    """IEIT's enhanced images E of every cache image and its selection rule, into <cache>.enhanced.h5.

    Built-in enhancement: adaptive gamma correction (Rahman et al. 2016) for dark images, Richardson-Lucy
    deconvolution for blurred ones (see `iqa_cli.enhance.ops`); --enhanced-root takes any other tool's output.
    """
    check_classifier_used(ctx, selection)
    if from_authors:
        from iqa_cli.enhance.authors import import_authors_enhanced

        if enhanced_root is not None or len(from_authors) > 2:
            raise ConfigError(
                "--from-authors takes the enhanced-image file and the selection file (no --enhanced-root)"
            )
        unused = given_flags(ctx, {**_SELECTION_FLAGS, "device": "--device"})
        if unused:
            raise ConfigError(
                f"{unused[0]}: --from-authors imports the authors' images and selection as they are, so "
                "nothing reads it; leave it out"
            )
        imported = import_authors_enhanced(cache, from_authors[0], from_authors[1] if len(from_authors) > 1 else None)
        if json_output:
            print_json(imported)
        else:
            kept = "" if imported["kept"] is None else f"; the authors' rule keeps {imported['kept']}"
            out.print(
                f"wrote {imported['count']} enhanced images to {imported['path']} ({imported['enhancement']}{kept})",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return
    summary = EnhanceRequest(enhanced_root, selection, classifier, device).run(cache)
    if json_output:
        print_json(summary.to_dict())
        return
    out.print(enhanced_line(summary), markup=False, highlight=False, soft_wrap=True)


def register(prepare_app: typer.Typer) -> None:
    """Add `enhance` to the `iqa prepare` group."""
    prepare_app.command("enhance")(enhance)
