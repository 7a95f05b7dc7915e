"""A small in-memory dataset with the cache interface, for engine tests that need no files.

Images are smooth random patterns plus Gaussian noise whose strength falls with the score, so a
tiny model can learn the ranking in a few dozen steps. Sizes vary, so padding and `sizes` matter.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class MemoryDataset:
    def __init__(self, n: int = 48, *, seed: int = 0, height: int = 80, width: int = 96) -> None:
        rng = np.random.default_rng(seed)
        self.scores = np.linspace(1.0, 5.0, n).astype(np.float32)
        rng.shuffle(self.scores)
        self.std = np.zeros(n, np.float32)
        self.names = [f"img{i:03d}.png" for i in range(n)]
        self.ref_ids = np.full(n, -1)
        shapes = [(height, width) if i % 3 else (width - 16, height - 8) for i in range(n)]
        self.sizes = np.array(shapes, dtype=np.int64)
        hmax, wmax = int(self.sizes[:, 0].max()), int(self.sizes[:, 1].max())
        self.images = np.zeros((n, hmax, wmax, 3), np.uint8)
        yy, xx = np.mgrid[0:hmax, 0:wmax]
        for i in range(n):
            h, w = self.sizes[i]
            phase = rng.uniform(0, 6.28, 3)
            base = 128 + 60 * np.sin(xx[:h, :w, None] / 9.0 + phase) * np.cos(yy[:h, :w, None] / 11.0 + phase)
            noise = rng.normal(0, 12.0 * (5.0 - self.scores[i]), (h, w, 3))
            self.images[i, :h, :w] = np.clip(base + noise, 0, 255).astype(np.uint8)
        self.attrs = {"dataset": "memory", "score_type": "MOS", "native_range": (1.0, 5.0), "lower_better": False}
        order = np.random.default_rng(seed + 1).permutation(n)
        cut = int(0.75 * n)
        self._splits = {"0": {"train": np.sort(order[:cut]), "test": np.sort(order[cut:])}}

    def __len__(self) -> int:
        return len(self.scores)

    def read_images(self, indices) -> np.ndarray:
        indices = np.asarray(indices)
        assert np.all(np.diff(indices) >= 0), "readers ask for increasing indices"
        return self.images[indices]

    def split_names(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> dict[str, np.ndarray]:
        return dict(self._splits[name])


def constant_predictions_on_call(monkeypatch: Any, call: int) -> None:
    """Make VT-IQA's `call`-th metrics computation (1-based) see constant predictions: a result with no
    finite correlation, as a collapsed model gives, at a chosen point of a run or an evaluation."""
    from iqa_cli.train.recipes.vtiqa import VTIQARecipe

    calls: list[int] = []
    real = VTIQARecipe.metrics

    def metrics(self: Any, pred: np.ndarray, labels: np.ndarray, params: Any) -> dict[str, Any]:
        calls.append(1)
        return real(self, np.full_like(pred, 3.0) if len(calls) == call else pred, labels, params)

    monkeypatch.setattr(VTIQARecipe, "metrics", metrics)
