"""`iqa demo`: the whole pipeline on a small real-photo dataset, on any machine, in a few minutes.

1. Dataset: tiles of the sample photographs that scikit-image ships (no download), each kept clean
   and degraded by Gaussian blur, Gaussian noise and JPEG compression at `levels` strengths. The
   score is a function of the level only: MOS = 5 - 4 * level / levels (clean 5, strongest 1), so the
   three distortion types share one scale. Written as a `custom` dataset: a folder of PNG/JPEG files
   plus `scores.csv` (name,score), re-usable with `iqa prepare custom`.
2. Cache: packed like `iqa prepare custom`, except that each image's source photograph is recorded as
   its reference, so the splits are reference-disjoint: test images come from photographs never seen
   in training. The tiles of one photograph overlap (random crops of a copy two tiles high), so a
   tile-level split would put parts of the same pixels on both sides, and a model could match test
   images to their training twins.
3. Training: a tiny VT-IQA (ViT width 64, depth 2, 8 px tokens, 64 px views: a 4 x 4 mosaic of
   16 px native patches plus a global crop) from random initialisation on the CPU, with AdamW, MSE
   and the plateau rule (`DEMO_SETTINGS`, about 3,500 steps); the model kept is chosen on a
   validation part of the training split.
4. Evaluation on the held-out test split: SRCC, PLCC (raw and logistic), KRCC, RMSE.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import PARTIAL_SUFFIX, atomic_path
from iqa_cli.data.cache_write import CacheOptions
from iqa_cli.errors import ConfigError, some_names
from iqa_cli.home import data_dir, home
from iqa_cli.progress import NullProgress, Progress

log = logging.getLogger(__name__)

# scikit-image sample photographs stored inside the package (no pooch download needed).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
    "camera",
    "coins",
    "moon",
    "clock",
    "brick",
    "grass",
    "gravel",
)
DISTORTIONS = ("blur", "noise", "jpeg")
# Strength per level 1..4 (interpolated for other level counts): blur sigma (px), noise sigma (grey levels),
# JPEG quality.
STRENGTH = {"blur": (0.8, 1.5, 2.5, 4.0), "noise": (8.0, 16.0, 28.0, 45.0), "jpeg": (40.0, 20.0, 10.0, 4.0)}
DATASET_NAME = "demo"
SPLIT = "random_0"
# A ViT learns these distortions from scratch only with enough tokens and steps: 8 px patches (64
# tokens per 64 px view; with 16 px patches it stays at the mean score), MSE (the protocol's L1 gives
# almost no gradient once predictions sit at the median), a constant lr for ~3,500 steps, evaluated
# every 5 epochs. These are demo settings, not VT-IQA's protocol (`iqa train vtiqa` defaults).
DEMO_SETTINGS: dict[str, Any] = {
    "patch_size": 8,
    "freeze_epochs": 0,
    "optimizer": "adamw",
    "lr": 5e-4,
    "weight_decay": 0.01,
    "dropout": 0.0,
    "loss": "mse",
    "batch_size": 32,
    "eval_batch_size": 64,
    "eval_every": 5,
    "val_fraction": 0.2,  # whole photographs (2 of the 12 training ones at the default size): steadier than 10 %
    "patience": 8,
    "plateau_after": 80,
    "lr_factor": 0.3,
    "min_lr": 1e-5,
    "crop_mode": "image",
    "log_every": 1000,
}
MIN_PHOTOS = 3


@dataclass
class DemoSize:
    photos: int = len(PHOTOS)
    tiles_per_photo: int = 6
    levels: int = 4
    tile: int = 128
    epochs: int = 150

    def images(self) -> int:
        return self.photos * self.tiles_per_photo * (1 + len(DISTORTIONS) * self.levels)


# The most images a demo writes (the default makes 1,170).
MAX_IMAGES = 20_000
FULL = DemoSize()
QUICK = DemoSize(photos=6, tiles_per_photo=2, levels=3, epochs=6)


@dataclass
class DemoReport:
    folder: Path
    cache: Path
    run: Path
    images: int
    split: str
    metrics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def _load_photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise ConfigError(
            "`iqa demo` needs scikit-image for its sample photographs: pip install 'iqa-cli[demo]'"
        ) from None
    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(float(image.max()), 1e-9))).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _tiles(photo: np.ndarray, count: int, tile: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` tile x tile crops of the photo resized so its short side is 2 tiles (antialiased)."""
    from PIL import Image

    h, w = photo.shape[:2]
    scale = 2 * tile / min(h, w)
    size = (max(tile, round(w * scale)), max(tile, round(h * scale)))
    resized = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS))
    out = []
    for _ in range(count):
        top = int(rng.integers(0, resized.shape[0] - tile + 1))
        left = int(rng.integers(0, resized.shape[1] - tile + 1))
        out.append(np.ascontiguousarray(resized[top : top + tile, left : left + tile]))
    return out


def _strength(kind: str, level: int, levels: int) -> float:
    table = STRENGTH[kind]
    position = (level - 1) * (len(table) - 1) / max(levels - 1, 1)
    return float(np.interp(position, np.arange(len(table)), table))


def _distort(tile: np.ndarray, kind: str, strength: float, rng: np.random.Generator) -> tuple[bytes, str]:
    """Encoded file bytes and extension of one tile ('clean' or distorted; JPEG artefacts stay in a .jpg file)."""
    from PIL import Image, ImageFilter

    image = Image.fromarray(tile)
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.save(buffer, format="JPEG", quality=int(round(strength)))
        return buffer.getvalue(), ".jpg"
    if kind == "blur" and strength > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=strength))
    elif kind == "noise":
        noisy = tile.astype(np.float64) + rng.normal(0.0, strength, tile.shape)
        image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    image.save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


def mos_of(level: int, levels: int) -> float:
    return 5.0 - 4.0 * level / levels


def build_demo_folder(
    folder: Path, size: DemoSize, *, seed: int = 0, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Write the images and `scores.csv`; returns one row per image (name, score, ref)."""
    progress = progress or NullProgress()
    # Three photographs at least: the splits keep each on one side, and training needs one to learn from
    # and one to validate on beside the test one.
    if size.photos < MIN_PHOTOS or size.photos > len(PHOTOS) or size.tiles_per_photo < 1 or size.levels < 1:
        raise ConfigError(
            f"demo size out of range: {MIN_PHOTOS}..{len(PHOTOS)} photos, >= 1 tile per photo, >= 1 level"
        )
    if size.images() > MAX_IMAGES:  # `--tiles 99999` began writing 19.5 million files
        raise ConfigError(
            f"--photos x --tiles x (1 + {len(DISTORTIONS)} x --levels) makes {size.images():,} demo images, more "
            f"than {MAX_IMAGES:,}: the demo is a tour of minutes; pack a large set with `iqa prepare custom`"
        )
    _check_demo_folder(folder)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    progress.start("demo images", size.images())
    for p, name in enumerate(PHOTOS[: size.photos]):
        for t, tile in enumerate(_tiles(_load_photo(name), size.tiles_per_photo, size.tile, rng)):
            ref = p  # the photograph: its tiles overlap, so they stay on one side of every split
            variants = [("clean", 0)] + [(kind, level) for kind in DISTORTIONS for level in range(1, size.levels + 1)]
            for kind, level in variants:
                strength = _strength(kind, level, size.levels) if level else 0.0
                data, suffix = _distort(tile, kind, strength, rng)
                relative = f"{name}/{name}_t{t}_{kind}{level}{suffix}"
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp:
                    tmp.write_bytes(data)
                rows.append({"name": relative, "score": mos_of(level, size.levels), "ref": ref})
                progress.advance(1)
    progress.finish()
    with atomic_path(folder / "scores.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "score"])
        for row in rows:
            writer.writerow([row["name"], f"{row['score']:g}"])
    return rows


def _check_demo_folder(folder: Path) -> None:
    """The demo writes `scores.csv` and one folder per photo: into a new folder or an earlier demo's, never
    among a user's files (`--workdir ~` would have replaced `~/photos/scores.csv`)."""
    if not folder.is_dir():
        return
    ours = {*PHOTOS, "scores.csv"}
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in ours and not p.name.endswith(PARTIAL_SUFFIX))
    scores = folder / "scores.csv"
    if scores.is_file():  # a demo's lists its own images only: `<photo>/<photo>_t0_clean0.png,5`
        with open(scores, encoding="utf-8", errors="replace") as handle:
            rows = list(itertools.islice(handle, 2))
        header_ok = bool(rows) and rows[0].strip() == "name,score"
        if not header_ok or (len(rows) > 1 and not rows[1].startswith(tuple(f"{name}/" for name in PHOTOS))):
            foreign = sorted([*foreign, "scores.csv"])
    if foreign:
        raise ConfigError(
            f"--workdir: {folder} holds files the demo did not write ({some_names(foreign)}); give a --workdir of "
            "its own"
        )


def _check_demo_cache(cache: Path) -> None:
    """The demo writes the cache `demo` over an earlier demo's, never over a dataset a user prepared under
    that name (`iqa prepare custom --name demo`): a demo's images are all named `<photo>/...`."""
    from iqa_cli.data.cache import open_cache
    from iqa_cli.errors import DataError

    if not cache.exists():
        return
    try:
        with open_cache(cache) as opened:
            names, root = list(opened.names), opened.attrs.get("source_root")
    except DataError:
        return  # damaged or unfinished: nothing in it to keep
    prefixes = tuple(f"{photo}/" for photo in PHOTOS)
    if names and all(name.startswith(prefixes) for name in names):
        return
    raise ConfigError(
        f"{cache} holds the cache '{DATASET_NAME}' of {len(names)} image(s) prepared from {root}, not a demo's; the "
        f"demo would replace it: move it, or prepare that dataset under another name"
    )


def prepare_demo_cache(
    folder: Path, rows: list[dict[str, Any]], out: Path, *, progress: Progress | None = None
) -> Path:
    """Pack the folder like `iqa prepare custom`, with each image's photograph recorded as its reference."""
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec(DATASET_NAME, folder / "scores.csv", root=folder, native_range=(1.0, 5.0), lower_better=False)
    spec = dataclasses.replace(spec, reference_disjoint=True)
    ref_of = {row["name"]: row["ref"] for row in rows}
    records = [dataclasses.replace(r, ref_id=ref_of[r.name]) for r in spec.parse(folder)]
    build_cache(spec, folder, out, CacheOptions(workers=1, splits=1), records=records, progress=progress)
    return out


def run_demo(
    *,
    size: DemoSize = FULL,
    workdir: Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
) -> DemoReport:
    """Build, prepare, train and evaluate; see the module docstring."""
    from iqa_cli.train.evaluate import EvalOptions, evaluate
    from iqa_cli.train.trainer import TrainOptions, train

    progress = progress or NullProgress()
    workdir = Path(workdir) if workdir is not None else home() / "demo"
    folder = workdir / "photos"
    for below in (workdir, *workdir.parents):  # a file where a folder must go: said before any work
        if below.exists():
            if not below.is_dir():
                raise ConfigError(f"--workdir: {below} is a file; expected a folder")
            break
    cache = data_dir() / f"{DATASET_NAME}.h5"
    _check_demo_cache(cache)
    seconds: dict[str, float] = {}

    started = time.monotonic()
    log.info(f"demo: writing {size.images()} images to {folder}")
    rows = build_demo_folder(folder, size, seed=seed, progress=progress)
    seconds["dataset"] = time.monotonic() - started

    started = time.monotonic()
    prepare_demo_cache(folder, rows, cache, progress=progress)
    seconds["prepare"] = time.monotonic() - started

    started = time.monotonic()
    overrides = {**DEMO_SETTINGS, "epochs": size.epochs, "device": device, "seed": seed}
    summary = train(
        TrainOptions(method="vtiqa", data=str(cache), split=SPLIT, overrides=overrides, tiny=True),
        progress,
    )
    seconds["train"] = time.monotonic() - started
    assert summary is not None, "the demo trains in one process, which writes the run"
    run = Path(summary["run"])

    started = time.monotonic()
    # The run just trained, by name: the newest demo run could be another process's.
    options = EvalOptions(method="vtiqa", data=str(cache), split=SPLIT, device=device, weights=str(run))
    report = evaluate(options, progress)
    seconds["evaluate"] = time.monotonic() - started
    seconds["total"] = sum(seconds.values())
    row = report.results[0]
    weights = row["weights"]
    return DemoReport(
        folder=folder,
        cache=cache,
        run=run,
        images=len(rows),
        split=SPLIT,
        metrics={k: row[k] for k in ("n", "srcc", "plcc", "plcc_logistic", "krcc", "rmse", "logistic_fit") if k in row},
        seconds=seconds,
        commands=[
            f"iqa eval vtiqa --data {DATASET_NAME} --split {SPLIT} --per-image predictions.csv",
            f"iqa predict vtiqa --weights {weights} {folder / PHOTOS[0]}",
            f"iqa train vtiqa --data {DATASET_NAME} --tiny --patch-size 8 --loss mse --optimizer adamw --lr 0.0005 "
            "--freeze-epochs 0 --epochs 200 --eval-every 5",
        ],
    )
