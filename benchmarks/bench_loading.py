"""Training batches delivered per second: the engine's loader against a per-image JPEG loader.

Both deliver VT-IQA's training inputs for every image of a generated KonIQ-like dataset (1024x768
JPEGs): a 224 crop (random offset and flip) of the image resized to 244, and a 7x7 mosaic of 32 px
patches at random cell offsets from the image resized to 768, both ImageNet-normalised float32 on
the device (`--views tiny`: the `--tiny` sizes 72/64 and 128/4x16).

* iqa, preloaded: `iqa prepare` cache -> `ViewStore` (the stored 244/768 views computed once and
  kept in RAM, as `iqa train` does when they fit `--preload-gb`) -> `BatchIterator` (a prefetch
  thread that cuts each batch's crop, flip and mosaic from the preloaded views,
  `Recipe.cut_train_views`) -> the recipe's `train_inputs` (normalise) on the device.
* iqa, streamed: the same with `--preload-gb 0`: every batch is read from the cache and resized
  to the stored views on the device (what `iqa train` does when the views do not fit the budget).
* per-image baseline: a torch `Dataset` that opens and decodes each source JPEG every epoch with
  PIL, resizes it with Pillow, crops/flips/cuts the mosaic and normalises with torchvision-style
  transforms, batched by a `DataLoader` with `num_workers` 0 and = the cores (both are reported;
  the speed-up is taken against workers = cores, the fairer of the two).

Reported: images/s, images/s per core (cores this process may use), peak memory (this process's
high-water mark and the sampled PSS of the process tree, workers included), one-off preload time.
Target: iqa preloaded >= 10x the per-image loader.

    python -m benchmarks.bench_loading             # full sizes
    python -m benchmarks.bench_loading --quick     # smoke run
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_loading.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common as C  # noqa: E402

GIB = 1024**3


def vtiqa_params(views: str, batch_size: int) -> Any:
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.trainer import resolve_config

    recipe = get_recipe("vtiqa")
    overrides = {"batch_size": batch_size, "pretrained": "none"}
    return recipe, resolve_config(recipe, tiny=views == "tiny", config_file=None, overrides=overrides).params


def epoch_batches(indices: np.ndarray, batch_size: int, epoch: int) -> list[np.ndarray]:
    from iqa_cli.train.engine import epoch_order

    order = epoch_order(indices, 0, epoch)
    return [order[i : i + batch_size] for i in range(0, order.size, batch_size)]


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_iqa(cache_path: Path, views: str, batch_size: int, epochs: int, device: Any, preload: bool) -> dict:
    from iqa_cli.data.cache import open_cache
    from iqa_cli.train.engine import batch_seed
    from iqa_cli.train.views import ViewStore

    recipe, params = vtiqa_params(views, batch_size)
    with open_cache(cache_path) as cache, C.PeakRSS() as peak, C.TreeMemorySampler(os.getpid()) as tree:
        indices = np.arange(len(cache))
        started = time.perf_counter()
        budget = 1e15 if preload else 0.0
        store = ViewStore(cache, recipe, params, device, indices, budget_bytes=budget)
        preload_seconds = time.perf_counter() - started
        images, started = 0, time.perf_counter()
        for epoch in range(epochs):
            batches = epoch_batches(indices, batch_size, epoch)
            seeds = [batch_seed(0, epoch, b, len(batches)) for b in range(len(batches))]
            with store.batches(batches, seeds) as it:  # seeds: crops cut on the host, as the engine does
                for b, (rows, views_on_device) in enumerate(it):
                    inputs = recipe.train_inputs(views_on_device, seeds[b], params)
                    assert inputs[0].shape[0] == rows.size
                    images += rows.size
            _sync(device)
        seconds = time.perf_counter() - started
        preloaded = store.preloaded
        del store
        gc.collect()
    return {
        "images": images,
        "seconds": seconds,
        "preload_seconds": preload_seconds if preload else None,
        "preloaded": preloaded,
        "peak_rss_mb": peak.mb,
        "peak_rss_scope": peak.scope,
        "peak_tree_mb": tree.peak_mb,
    }


class JpegViews:
    """The per-image way: decode the source JPEG, resize, crop/flip, cut the mosaic, normalise."""

    def __init__(self, folder: C.JpegFolder, params: Any) -> None:
        self.paths = [folder.root / n for n in folder.names()]
        self.params = params

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import torch
        import torchvision.transforms.functional as TF
        from PIL import Image

        from iqa_cli.models.imagenet import IMAGENET_MEAN, IMAGENET_STD

        p = self.params
        with Image.open(self.paths[index]) as im:
            rgb = im.convert("RGB")
        small = rgb.resize((p.global_source, p.global_source), Image.Resampling.BICUBIC)
        large = np.asarray(rgb.resize((p.mosaic_source, p.mosaic_source), Image.Resampling.BICUBIC))
        top, left = (int(v) for v in torch.randint(p.global_source - p.crop_size + 1, (2,)))
        crop = TF.crop(small, top, left, p.crop_size, p.crop_size)
        if torch.rand(()) < 0.5:
            crop = TF.hflip(crop)
        cell = p.mosaic_source // p.mosaic_grid
        offsets = torch.randint(cell - p.mosaic_patch, (2, p.mosaic_grid)).numpy()
        rows = np.arange(p.mosaic_grid) * cell + offsets[0]
        cols = np.arange(p.mosaic_grid) * cell + offsets[1]
        mosaic = np.concatenate(
            [
                np.concatenate([large[r : r + p.mosaic_patch, c : c + p.mosaic_patch] for c in cols], axis=1)
                for r in rows
            ],
            axis=0,
        )
        x_global = TF.normalize(TF.to_tensor(crop), IMAGENET_MEAN, IMAGENET_STD)
        x_mosaic = TF.normalize(TF.to_tensor(np.ascontiguousarray(mosaic)), IMAGENET_MEAN, IMAGENET_STD)
        return x_global, x_mosaic


def measure_per_image(folder: C.JpegFolder, views: str, batch_size: int, epochs: int, device: Any, workers: int):
    import torch
    from torch.utils.data import DataLoader

    _, params = vtiqa_params(views, batch_size)
    dataset = JpegViews(folder, params)
    pin = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=pin)
    torch.manual_seed(0)
    with C.PeakRSS() as peak, C.TreeMemorySampler(os.getpid()) as tree:
        images, started = 0, time.perf_counter()
        for _ in range(epochs):
            for x_global, x_mosaic in loader:
                x_global = x_global.to(device, non_blocking=True)
                x_mosaic = x_mosaic.to(device, non_blocking=True)
                images += x_global.shape[0]
            _sync(device)
        seconds = time.perf_counter() - started
    return {
        "images": images,
        "seconds": seconds,
        "peak_rss_mb": peak.mb,
        "peak_rss_scope": peak.scope,
        "peak_tree_mb": tree.peak_mb,
    }


def main(argv: list[str]) -> int:
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=384, help="KonIQ-like images (1024x768 JPEG)")
    parser.add_argument("--batch-size", type=int, default=192, help="VT-IQA's protocol batch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed for every loader")
    parser.add_argument("--views", choices=("full", "tiny"), default="full", help="VT-IQA view sizes")
    parser.add_argument(
        "--distinct", type=int, default=64, help="images with their own pixels (the rest: copies with a JPEG comment)"
    )
    parser.add_argument("--device", default="cpu", help="where the batches are delivered: cpu or cuda")
    parser.add_argument(
        "--workers", default=None, help="baseline DataLoader workers, comma-separated (default 0,cores)"
    )
    parser.add_argument("--no-streamed", action="store_true", help="skip the streamed (not preloaded) iqa loader")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.batch_size, args.epochs, args.views, args.distinct = 24, 8, 1, "tiny", 4
    import torch

    C.torch_setup()
    device = torch.device(args.device)
    label = C.device_label(device)
    workers = [int(w) for w in str(args.workers).split(",")] if args.workers else sorted({0, C.cores()})
    bench = C.Bench("loading", args)
    workdir = C.workdir_of(args)
    size = {"images": args.images, "epochs": args.epochs, "batch": args.batch_size, "views": args.views}
    with C.scratch_home(workdir):
        folder = C.jpeg_folder(args.images, C.KONIQ_LIKE, distinct=args.distinct, workdir=workdir)
        cache = C.prepare_cache(folder, workdir / "caches" / f"loading_{folder.root.name}.h5", resize="none")
        results: dict[str, dict[str, Any]] = {}
        modes = [("preloaded", True)] + ([] if args.no_streamed else [("streamed", False)])
        for mode, preload in modes:
            what = f"loading.iqa.{mode}"
            try:
                r = measure_iqa(cache, args.views, args.batch_size, args.epochs, device, preload)
                results[what] = bench.emit(
                    what,
                    size=size,
                    device=label,
                    images_per_s_per_core=r["images"] / r["seconds"] / C.cores(),
                    method=f"ViewStore ({mode}) + BatchIterator + recipe.train_inputs on {device.type}",
                    threads=f"{torch.get_num_threads()} torch threads + 1 prefetch thread",
                    **r,
                )
            except Exception as exc:
                bench.error(what, exc)
        for count in workers:
            what = f"loading.per_image.workers{count}"
            try:
                r = measure_per_image(folder, args.views, args.batch_size, args.epochs, device, count)
                results[what] = bench.emit(
                    what,
                    size=size,
                    device=label,
                    images_per_s_per_core=r["images"] / r["seconds"] / C.cores(),
                    method="Dataset: PIL decode of the source JPEG + Pillow resizes + torchvision crop/flip/normalise",
                    workers=count,
                    **r,
                )
            except Exception as exc:
                bench.error(what, exc)
        fair = f"loading.per_image.workers{max(workers)}"
        for mode in ("preloaded", "streamed"):
            ours = results.get(f"loading.iqa.{mode}")
            if ours is not None and fair in results:
                bench.compare(
                    f"loading.speedup.{mode}",
                    ours,
                    results[fair],
                    target=10.0 if mode == "preloaded" else None,
                    note=f"iqa {mode} vs the per-image loader with {max(workers)} worker(s)",
                )
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
