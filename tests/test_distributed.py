"""DDP: two gloo ranks on this machine train like one process at the same global batch size
(the tiny presets; dcgan's minibatch_std, off there, takes each rank's spread, so a DDP fit
with it is not the one-process fit)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.resumable import MemoryCheckpoint, Recorder
from tests.test_resume import TRAINED_PRIORS, fit_prior, train_backbone
from vqvae import TrainConfig

WORLD = 2
ONE_LEFT = ["pixelcnn", "dcgan"]  # also fitted on 17 grids: a last batch of 1, rank 1 has none
RESUME_AT = 3  # pixelcnn fitted on 2 ranks from the state a 1-process fit saved after this step


class Spy(MemoryCheckpoint):
    """Counts the calls; keeps the state saved after step `keep`."""

    def __init__(self, keep: int | None = None, start: bytes | None = None) -> None:
        super().__init__(every=1)
        self.calls, self.keep, self.kept, self.blob = 0, keep, None, start

    def load(self):
        self.calls += 1
        return super().load()

    def save(self, state):
        self.calls += 1
        super().save(state)
        if state["step"] == self.keep:
            self.kept = self.blob

    def due(self, step):
        self.calls += 1
        return super().due(step)


def train_all(resume: bool = False, blob: bytes | None = None) -> dict:
    """The backbone and every trained prior, each with its last training loss; with `resume`,
    pixelcnn again, started from the checkpoint `blob`."""
    out = {}
    spy = Spy()
    state, summary = train_backbone(spy, Recorder())
    out["backbone"] = {"state": state, "loss": summary["final_mse"], "calls": spy.calls}
    for name, n_train in [(n, 20) for n in TRAINED_PRIORS] + [(n, 17) for n in ONE_LEFT]:
        spy, progress = Spy(keep=RESUME_AT), Recorder()
        state, summary = fit_prior(name, spy, progress, n_train)
        last = progress.ticks[-1]  # autoregressive: train_loss (loss is val's); dcgan: G's loss
        out[name if n_train == 20 else f"{name}-17"] = {
            "state": state, "loss": last.get("train_bits_per_code", last.get("g_loss")), "calls": spy.calls,
            "val": summary.get("val_bits_per_code", 0.0), "kept": spy.kept}
    if resume:
        state, _ = fit_prior("pixelcnn", Spy(start=blob), Recorder())
        out["resumed"] = {"state": state}
    return out


def worker(rank: int, out_dir: str, resume_from: bytes) -> None:
    """One rank of the gloo group: `train_all`, results to `out_dir`/rank{rank}.pt. The ranks
    meet through a file in `out_dir` (no port to pick that another process could take)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous(out_dir), rank=rank, world_size=WORLD)
    try:
        result = train_all(True, resume_from if rank == 0 else None)  # rank 1 finds none
        try:
            train_backbone(MemoryCheckpoint(), Recorder(), TrainConfig(epochs=1, batch_size=7))
        except ValueError as e:
            result["refused"] = str(e)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def rendezvous(folder: str) -> str:
    """init_method of a gloo group whose ranks meet through a file (a fresh folder per group)."""
    return (Path(folder) / "rendezvous").resolve().as_uri()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    single = train_all()
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(out), single["pixelcnn"]["kept"]), nprocs=WORLD)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return single, ranks


@pytest.mark.parametrize("name", ["backbone", *TRAINED_PRIORS, *[f"{n}-17" for n in ONE_LEFT]])
def test_ranks_end_identical_and_only_rank0_touches_the_checkpoint(name, one_and_two):
    _, (rank0, rank1) = one_and_two
    assert rank0[name]["state"].keys() == rank1[name]["state"].keys()
    for k, v in rank0[name]["state"].items():
        assert torch.equal(v, rank1[name]["state"][k]), k
    assert rank0[name]["calls"] > 0 and rank1[name]["calls"] == 0


@pytest.mark.parametrize("name", ["backbone", "pixelcnn", "gated-pixelcnn", "transformer",
                                  "pixelcnn-17"])
def test_two_ranks_train_to_the_loss_of_one_process(name, one_and_two):
    single, (rank0, _) = one_and_two
    assert rank0[name]["loss"] == pytest.approx(single[name]["loss"], rel=0.02)
    if name != "backbone":
        assert rank0[name]["val"] == pytest.approx(single[name]["val"], rel=0.02)


def test_a_resumed_two_rank_fit_broadcasts_rank0s_checkpoint(one_and_two):
    single, (rank0, rank1) = one_and_two
    # both ranks restarted from the 1-process state after RESUME_AT steps (only rank 0 had it)
    for k, v in rank0["resumed"]["state"].items():
        assert torch.equal(v, rank1["resumed"]["state"][k]), k
        assert torch.allclose(v.float(), single["pixelcnn"]["state"][k].float(), atol=1e-4), k


def test_backbone_batch_must_split_evenly_over_the_ranks(one_and_two):
    _, (rank0, _) = one_and_two
    assert rank0["refused"] == "batch_size must be a multiple of the 2 ranks, got 7"
