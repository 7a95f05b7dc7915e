"""Damaged or hostile files: a checkpoint with overwritten bytes, non-finite weights, a decompression
bomb. Each is refused with one line naming the file; nothing is scored from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_cli.home import data_dir
from iqa_cli.models.checkpoint import read_state_dict, save_checkpoint
from tests.adversarial.helpers import digest, error_line, invoke
from tests.train.caches import make_cache


@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    from iqa_cli.train.recipes import get_recipe

    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    recipe = get_recipe("vtiqa")
    torch.manual_seed(0)
    model = recipe.build_model(recipe.Params(), tiny=True, pretrained=False)
    return save_checkpoint(model, tmp_path / "tiny.safetensors", {"method": "vtiqa", "tiny": True})


def _overwrite_4k(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    start = 8 + header + (len(data) - 8 - header) // 2  # the middle of the tensor data
    data[start : start + 4096] = b"\xff" * 4096  # 0xffffffff is a float32 NaN
    path.write_bytes(bytes(data))


def test_overwritten_bytes_in_an_iqa_checkpoint_fail_its_digest(tiny_weights):
    _overwrite_4k(tiny_weights)
    before = digest(tiny_weights)
    line = error_line(invoke("eval", "vtiqa", "--data", "mini", "--weights", tiny_weights, "--split", "0"))
    assert "do not match the digest" in line and str(tiny_weights) in line
    image = tiny_weights.parent / "photo.png"  # predict reads the header first, the tensors while decoding
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    line = error_line(invoke("predict", "vtiqa", image, "--weights", tiny_weights))
    assert "do not match the digest" in line and str(tiny_weights) in line
    assert digest(tiny_weights) == before


def test_non_finite_weights_without_a_digest_are_refused(tiny_weights, tmp_path):
    state, meta = read_state_dict(tiny_weights)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1 and "weight" in k)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"  # written by another tool: no digest to check
    save_file(state, str(foreign), metadata={k: v for k, v in meta.items() if k != "content_sha256"})
    line = error_line(invoke("eval", "vtiqa", "--data", "mini", "--weights", foreign, "--split", "0"))
    assert "non-finite weights" in line and key in line and "foreign.safetensors" in line
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    assert "non-finite weights" in error_line(invoke("predict", "vtiqa", image, "--weights", foreign))


def test_a_decompression_bomb_is_refused_before_decoding(tiny_weights, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (12000, 12000)).save(bomb, optimize=True)  # ~140 KB, 144 MP, 432 MB as RGB
    assert bomb.stat().st_size < 1_000_000
    line = error_line(invoke("predict", "vtiqa", bomb, "--weights", tiny_weights))
    assert "12000x12000" in line and "MP limit" in line and "IQA_MAX_PIXELS" in line


def test_a_deflated_pth_bomb_is_refused_from_the_zip_directory(tmp_path):
    """2 MB on disk, gigabytes once inflated: refused before a tensor is made (no memory spike)."""
    import resource
    import zipfile

    small = tmp_path / "small.pth"
    torch.save({"w": torch.zeros(4)}, small)
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
        prefix = source.infolist()[0].filename.split("/")[0]
        with target.open(f"{prefix}/data/99", "w", force_zip64=True) as member:
            block = bytes(2**20)
            for _ in range(1024):  # 1 GiB of zeros
                member.write(block)
    assert bomb.stat().st_size < 8 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    line = error_line(invoke("weights", "import", "vtiqa", bomb, "--name", "boom"))
    assert "would unpack to 1024 MiB" in line and "bomb.pth" in line
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300 * 1024  # KiB: no 1 GiB spike


def test_constant_predictions_are_no_result(tiny_weights, tmp_path):
    """A model that scores every image the same gives SRCC NaN on every split: an error, not a table."""
    state, meta = read_state_dict(tiny_weights)
    for key in [k for k in state if k.startswith("head.")]:
        state[key] = torch.zeros_like(state[key])
    flat = save_checkpoint(state, tmp_path / "flat.safetensors", meta)
    line = error_line(invoke("eval", "vtiqa", "--data", "mini", "--weights", flat, "--split", "0"))
    assert "no split gave a finite srcc" in line


def test_exit_codes_say_the_kind_of_error(tmp_path):
    """2 usage, 65 bad input data, 69 downloads, 3 a diverged run (documented in the README)."""
    from iqa_cli.errors import EXIT_DATA, EXIT_DIVERGED, EXIT_UNAVAILABLE, EXIT_USAGE
    from iqa_cli.train.engine import TrainingDiverged

    assert (EXIT_USAGE, EXIT_DIVERGED, EXIT_DATA, EXIT_UNAVAILABLE) == (2, 3, 65, 69)
    usage = invoke("train", "vtiqa", "--data", "x", "--epochs", "0")
    assert usage.exit_code == 2 and "--epochs" in error_line(usage)
    data = invoke("prepare", "livew", "--root", str(tmp_path / "missing"))
    assert data.exit_code == 65 and str(tmp_path / "missing") in error_line(data)
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    checkpoint = invoke("predict", "vtiqa", str(bad), "--weights", str(bad))
    assert checkpoint.exit_code == 65, checkpoint.output
    download = invoke("weights", "fetch", "deit_small_patch16_224", env={"IQA_OFFLINE": "1"})
    assert download.exit_code == 69 and "deit_small_patch16_224" in error_line(download)
    assert TrainingDiverged("x").exit_code == 3
