"""The console on a terminal: one bar for the whole run above the epoch's bar; finished epoch bars go."""

from __future__ import annotations

import io

from rich.console import Console

from iqa_cli.cli import console


def test_run_bar_and_epoch_bars_on_a_terminal(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(console, "is_tty", lambda: True)
    monkeypatch.setattr(console, "err", Console(file=screen, force_terminal=True, width=120))
    progress = console.ConsoleProgress(bar_lines=False)
    progress.overall("vtiqa split random_0: epochs", 3, 0)
    for epoch in range(3):
        progress.start(f"epoch {epoch}", 4)
        progress.advance(4)
        progress.finish()
        progress.log(f"split random_0 epoch {epoch}: loss 0.1")
        progress.overall("vtiqa split random_0: epochs", 3, epoch + 1)
        assert len(progress._live.tasks) == 1  # only the run's bar is left between epochs
    progress.end_overall()
    text = screen.getvalue()
    assert "vtiqa split random_0: epochs" in text and "epoch 0" in text and "epoch 2: loss 0.1" in text
    assert progress._live is None
