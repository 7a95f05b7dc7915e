"""Seeds beyond what numpy's 32-bit generators and the caches' integer attributes hold: refused up front."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.errors import ConfigError
from iqa_cli.seeds import MAX_SEED, check_seed

TOO_LARGE = str(10**20)


@pytest.mark.parametrize(
    "args",
    [
        # both ended in an internal error (exit 1): "Overflow when unpacking long long" from the k-means
        # stand-in, and HDF5's "Object dtype has no native HDF5 equivalent" once the references were read
        ["al", "select", "--data", "none", "--tiny", "--out", "next.txt", "--seed", TOO_LARGE],
        ["prepare", "distorted", "--refs", "none", "--out", "d.h5", "--seed", TOO_LARGE],
    ],
)
def test_a_seed_too_large_is_refused_while_parsing(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--seed" in result.output and str(MAX_SEED) in result.output, result.output


def test_the_library_checks_seeds_too(tmp_path):
    from iqa_cli.distort.generate import DistortOptions, generate_distorted

    with pytest.raises(ConfigError, match=f"--seed: must be a whole number from 0 to {MAX_SEED}, got {2**64}"):
        generate_distorted([tmp_path / "a.png"], tmp_path / "d.h5", DistortOptions(seed=2**64))
    for bad in (-1, MAX_SEED + 1, True, 1.5):
        with pytest.raises(ConfigError):
            check_seed(bad, "--seed")  # type: ignore[arg-type]
    check_seed(MAX_SEED, "--seed")
