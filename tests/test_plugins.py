"""A third-party method plugs in through entry points: a package on the path that declares a network
(`iqa_cli.models`) and a recipe (`iqa_cli.recipes`) trains with `iqa train <method> --tiny` and
evaluates, with no change to iqa. The example package is `tests/plugin_example/`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "plugin_example"
REPO = Path(__file__).resolve().parents[1]


def iqa(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "iqa_cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_a_plugin_method_trains_and_evaluates(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN), str(REPO)]), "IQA_HOME": str(tmp_path / "home")}
    env["OMP_NUM_THREADS"] = "1"
    setup = (
        "import sys; sys.path.insert(0, '.'); from pathlib import Path; from tests.train.caches import make_cache; "
        f"make_cache('mini', Path({str(tmp_path)!r}) / 'src', Path({str(tmp_path)!r}) / 'home' / 'data' / 'mini.h5')"
    )
    subprocess.run([sys.executable, "-c", setup], env=env, cwd=REPO, check=True, timeout=120)
    listed = iqa("models", "--json", env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "plugin-cnn" in listed.stdout
    trained = iqa(
        "train",
        "plugin-iqa",
        "--tiny",
        "--device",
        "cpu",
        "--data",
        "mini",
        "--epochs",
        "2",
        "--val-fraction",
        "0.2",
        "--json",
        env=env,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    row = json.loads(trained.stdout)["splits"][0]
    assert row["epochs"] == 2 and row["n"] > 0
    scored = iqa("eval", "plugin-iqa", "--data", "mini", "--device", "cpu", "--json", env=env)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert json.loads(scored.stdout)["results"][0]["srcc"] == row["srcc"]
    typo = iqa("train", "plugin-iq", "--data", "mini", env=env)
    assert typo.returncode != 0 and "plugin-iqa" in typo.stderr


def test_without_the_plugin_the_method_is_unknown_with_a_suggestion():
    from iqa_cli.errors import ConfigError
    from iqa_cli.train.recipes import get_recipe

    try:
        get_recipe("vtiqaa")
    except ConfigError as exc:
        assert "did you mean 'vtiqa'?" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown method was accepted")
