"""Test doubles for resumable training: a checkpoint kept in memory that can kill the run."""

from __future__ import annotations

import io
from typing import Any, Callable

import torch


class Killed(Exception):
    """Stands in for kill -9 between two training steps."""


class MemoryCheckpoint:
    """Due after every `every`-th step; each save round-trips through torch.save and
    torch.load(weights_only=True), as a file would. `kill_at`: raise `Killed` when asked
    whether a save is due after that step (the run dies there, before any save of that step);
    `kill_after_saves`: raise right after that many saves."""

    def __init__(self, every: int = 1, kill_at: int | None = None,
                 kill_after_saves: int | None = None) -> None:
        self.every, self.kill_at, self.kill_after_saves = every, kill_at, kill_after_saves
        self.blob: bytes | None = None
        self.saved_steps: list[int] = []

    def load(self) -> dict[str, Any] | None:
        return None if self.blob is None else torch.load(io.BytesIO(self.blob), weights_only=True)

    def save(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        self.blob = buf.getvalue()
        self.saved_steps.append(state["step"])
        if len(self.saved_steps) == self.kill_after_saves:
            raise Killed

    def due(self, step: int) -> bool:
        if step == self.kill_at:
            raise Killed
        return step % self.every == 0

    def revive(self) -> "MemoryCheckpoint":
        """The same saved state, no kill pending: what a restarted run finds."""
        self.kill_at = self.kill_after_saves = None
        return self


class Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.descriptions: list[str] = []
        self.ticks: list[dict[str, float]] = []

    def start(self, description: str, total: int | None) -> None:
        self.descriptions.append(description)
        self.ticks = []

    def advance(self, n: int = 1, **metrics: float) -> None:
        self.ticks += [metrics] * n

    def stop(self) -> None:
        pass


def interrupted_then_resumed(train: Callable[[MemoryCheckpoint, Recorder], Any],
                             checkpoint: MemoryCheckpoint) -> tuple[Recorder, int | None]:
    """Run `train` until the checkpoint kills it, then again from what it saved. Returns the
    second run's progress and the step it resumed at (None: nothing was saved)."""
    try:
        train(checkpoint, Recorder())
    except Killed:
        pass
    else:
        raise AssertionError("the checkpoint never killed the run")
    resumed_at = checkpoint.saved_steps[-1] if checkpoint.saved_steps else None
    progress = Recorder()
    train(checkpoint.revive(), progress)
    return progress, resumed_at


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def bits_in_batches(batch: int, seen: list, *, kill_in: int | None = None,
                    save_every_batch: bool = False) -> Callable[..., Any]:
    """A stand-in for `bench.sampling.measure_bits` (to monkeypatch where a stage calls it):
    the real one, `batch` grids at a time, raising `Killed` in the prior's `kill_in`-th
    log_prob call; appends each result to `seen`. `save_every_batch`: the store checkpoint it
    is given saves after every batch."""
    from bench.sampling import measure_bits

    def measure(prior, test, _batch: int = 256, **kw):
        if save_every_batch:
            kw["checkpoint"].every_s = 0
        calls, log_prob = [0], prior.log_prob

        def counted(c, labels=None):
            calls[0] += 1
            if calls[0] == kill_in:
                raise Killed
            return log_prob(c, labels)
        prior.log_prob = counted
        seen.append(measure_bits(prior, test, batch, **kw))
        return seen[-1]
    return measure
