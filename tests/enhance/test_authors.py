"""`iqa prepare enhance CACHE --from-authors E.mat PROB.npz`: IEIT's published files (their key names and
shapes), rows matched through their prep order, stored exactly, the selection rule as their scripts apply it."""

from __future__ import annotations

import json

import h5py
import numpy as np
from scipy.io import savemat
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.data.authors_splits import esnthere_prep_order
from iqa_cli.data.cache import open_cache
from iqa_cli.enhance.store import PairedDataset, open_enhanced
from tests.data.fixtures import FIXTURES

runner = CliRunner()


def test_import_the_authors_enhanced_images_and_selection(tmp_path):
    expected = FIXTURES["livew"](tmp_path / "root")
    cache = tmp_path / "livew.h5"
    prepared = runner.invoke(app, ["prepare", "livew", "--root", str(expected.root), "--out", str(cache), "--size",
                                   "244x244", "-j", "1"])  # fmt: skip
    assert prepared.exit_code == 0, prepared.output
    with open_cache(cache) as opened:
        n = len(opened)
        rows = esnthere_prep_order(opened.image_list())
    rng = np.random.default_rng(0)
    with open_cache(cache) as opened:  # [X; Xtest], row r = cache image rows[r], brightened (their E)
        images = opened.read_images(np.asarray(rows)).astype(np.int16)
    their = np.clip(images * 1.2 + 10, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    cut = int(n * 0.8)
    enhanced_file = tmp_path / "livew_244_brt_debulr.mat"
    savemat(enhanced_file, {"X": their[:cut], "Xtest": their[cut:]})
    op, op2 = rng.random((n, 1000)), rng.random((n, 1000))
    op2[::3, 0] = 0.0  # make some rows' E less confident than I
    op[::3, 0] = 5.0
    prob_file = tmp_path / "livew_prob_compare.npz"
    np.savez(prob_file, op_train=op[:cut], op_train2=op2[:cut], op_test=op[cut:], op_test2=op2[cut:])
    result = runner.invoke(app, ["prepare", "enhance", str(cache), "--from-authors", str(enhanced_file),
                                 "--from-authors", str(prob_file), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    keep_rows = op2.max(axis=1) - op.max(axis=1) >= 0
    assert summary["count"] == n and summary["kept"] == int(keep_rows.sum())
    with open_cache(cache) as opened:
        enhanced = open_enhanced(opened, cache)
        for r in (0, 5, n - 1):
            assert np.array_equal(enhanced.read_images(np.array([rows[r]]))[0], their[r].transpose(1, 2, 0))
        with h5py.File(enhanced.path) as handle:
            assert np.array_equal(handle["keep_enhanced"][()][rows], keep_rows)
        paired = PairedDataset(opened, enhanced, use_selection=True)
        dropped = int(np.flatnonzero(~keep_rows)[0])
        both = paired.read_images(np.array([rows[dropped]]))
        assert both.shape[-1] == 6 and np.array_equal(both[0, ..., 3:], both[0, ..., :3])  # I put back for E
        enhanced.close()
    refused = runner.invoke(app, ["prepare", "enhance", str(cache), "--from-authors", str(tmp_path / "nope.mat")])
    assert refused.exit_code != 0 and "file not found" in refused.output

    # Rows in another order (or another dataset's file of as many images) were stored as this cache's E.
    shuffled = tmp_path / "shuffled_244_brt_debulr.mat"
    savemat(shuffled, {"X": their[::-1][:cut], "Xtest": their[::-1][cut:]})
    misaligned = runner.invoke(app, ["prepare", "enhance", str(cache), "--from-authors", str(shuffled)])
    said = " ".join(misaligned.output.split())
    assert misaligned.exit_code != 0 and "do not look like this cache's at the same rows" in said, misaligned.output
