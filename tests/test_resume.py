"""Resumable training: a run killed after any step and restarted from its last checkpoint ends
with bitwise the same weights as an uninterrupted run (CPU), for every trained artefact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import priors
import trainkit
from bench.extractors import mri
from bench.sampling import measure_bits
from bench.extractors.mri import train_encoder
from priors import CodeSet, accepts_checkpoint, get_prior
from priors.base import epoch_count
from priors.netprior import NetPrior
from vqvae import VQVAE, TrainConfig, VQVAEConfig, train_vqvae
from tests.resumable import (Killed, MemoryCheckpoint, Recorder, assert_same_tensors,
                             interrupted_then_resumed)

K, GRID = 12, (4, 4)
TRAINED_PRIORS = [n for n in priors.available_priors() if accepts_checkpoint(get_prior(n))]
STEPS = 6  # 20 grids in batches of 8 (tiny presets): 3 steps per epoch, the last short; 2 epochs

EPOCH_ORDERS = [trainkit.EpochOrder]  # the one both libraries train with


def codes(n: int, seed: int) -> CodeSet:
    g = torch.Generator().manual_seed(seed)
    return CodeSet(torch.randint(0, K, (n, *GRID), generator=g), K,
                   torch.randint(0, 3, (n,), generator=g))


def fit_prior(name: str, checkpoint, progress,
              n_train: int = 20) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    cls = get_prior(name)
    prior = cls(cls.preset("tiny"), num_codes=K, grid=GRID, num_classes=3 if cls.conditional else 0,
                codebook=torch.randn(K, 4, generator=torch.Generator().manual_seed(0)))
    summary = prior.fit(codes(n_train, 0), codes(6, 1), seed=3, progress=progress,
                        checkpoint=checkpoint)
    return prior.state_dict(), summary


@pytest.mark.parametrize("EpochOrder", EPOCH_ORDERS)
def test_epoch_order_covers_each_epoch_once_with_a_short_last_batch(EpochOrder):
    order = EpochOrder(10, 4, 3, torch.Generator().manual_seed(0))
    batches = [order.batch(step) for step in range(5)]
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4] and epoch_count(10, 4, 5) == 2
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(batches[:2]), torch.cat(batches[3:]))  # reshuffled


@pytest.mark.parametrize("done", [0, 1, 3, 4, 7])  # none, mid-epoch, at an epoch end, ...
@pytest.mark.parametrize("EpochOrder", EPOCH_ORDERS)
def test_epoch_order_restored_from_its_state_continues_the_same_batches(EpochOrder, done):
    steps = range(done, 12)
    order = EpochOrder(10, 4, 3, torch.Generator().manual_seed(0))
    for step in range(done):
        order.batch(step)
    state = order.state_dict()
    expected = [order.batch(step) for step in steps]
    restored = EpochOrder(10, 4, 3, torch.Generator().manual_seed(99))  # another seed: state wins
    restored.load_state_dict(state)
    assert all(torch.equal(restored.batch(s), e) for s, e in zip(steps, expected))


def test_the_trained_priors_take_a_checkpoint():
    assert {"pixelcnn", "gated-pixelcnn", "transformer", "dcgan"} <= set(TRAINED_PRIORS)


def check_resume(train, checkpoint: MemoryCheckpoint, reference) -> None:
    """`train(checkpoint, progress) -> (state, summary)` killed by `checkpoint`, then resumed,
    ends where `reference` (an uninterrupted run's (state, summary, progress)) ended."""
    out = {}
    progress, resumed = interrupted_then_resumed(
        lambda c, p: out.update(result=train(c, p)), checkpoint)
    state, summary = out["result"]
    ref_state, ref_summary, ref_progress = reference
    assert_same_tensors(state, ref_state)
    assert summary.keys() == ref_summary.keys()
    assert all(summary[k] == ref_summary[k] or "wall" in k or "cpu" in k or k.endswith("_s")
               for k in summary)
    assert progress.ticks == ref_progress.ticks  # the bar starts where it was, same values
    if resumed is None:
        assert "resumed" not in progress.descriptions[0]
    else:
        assert progress.descriptions[0].endswith(f"(resumed at step {resumed})")


@pytest.fixture(scope="module")
def reference_fits():
    out = {}
    for name in TRAINED_PRIORS:
        progress = Recorder()
        out[name] = (*fit_prior(name, MemoryCheckpoint(every=STEPS + 1), progress), progress)
    return out


@pytest.mark.parametrize("kill_after_saves", range(1, STEPS + 1))
@pytest.mark.parametrize("name", TRAINED_PRIORS)
def test_prior_resumed_after_any_step_is_bitwise_uninterrupted(name, kill_after_saves,
                                                                reference_fits):
    check_resume(lambda c, p: fit_prior(name, c, p),
                 MemoryCheckpoint(every=1, kill_after_saves=kill_after_saves),
                 reference_fits[name])


@pytest.mark.parametrize("kill_at", [1, 2, 5])
@pytest.mark.parametrize("name", TRAINED_PRIORS)
def test_prior_redoes_the_steps_after_its_last_checkpoint(name, kill_at, reference_fits):
    check_resume(lambda c, p: fit_prior(name, c, p), MemoryCheckpoint(every=2, kill_at=kill_at),
                 reference_fits[name])


# -- a val pass killed part way -----------------------------------------------------------

NET_PRIORS = [n for n in TRAINED_PRIORS if issubclass(get_prior(n), NetPrior)]
VAL_SAVES = 10  # 2 epochs of 3 steps, each epoch end 3 val batches: 6 step saves, 4 within


def fit_val_batches(name: str, checkpoint, progress, calls: list[int] | None = None):
    """`fit_prior` with 2 val grids per batch, so each epoch end scores val in 3 batches."""
    cls = get_prior(name)
    prior = cls(dataclasses.replace(cls.preset("tiny"), eval_batch_size=2), num_codes=K,
                grid=GRID, num_classes=3 if cls.conditional else 0,
                codebook=torch.randn(K, 4, generator=torch.Generator().manual_seed(0)))
    if calls is not None:
        log_prob = prior.log_prob
        prior.log_prob = lambda c, lab=None: calls.append(len(c)) or log_prob(c, lab)
    summary = prior.fit(codes(20, 0), codes(6, 1), seed=3, progress=progress,
                        checkpoint=checkpoint)
    return prior.state_dict(), summary


@pytest.fixture(scope="module")
def reference_val_batches():
    out = {}
    for name in NET_PRIORS:
        progress = Recorder()
        out[name] = (*fit_val_batches(name, MemoryCheckpoint(every=STEPS + 1), progress),
                     progress)
    return out


@pytest.mark.parametrize("kill_after_saves", range(1, VAL_SAVES + 1))
@pytest.mark.parametrize("name", ["transformer", "maskgit"])
def test_prior_killed_in_a_val_pass_resumes_it_bitwise(name, kill_after_saves,
                                                       reference_val_batches):
    check_resume(lambda c, p: fit_val_batches(name, c, p),
                 MemoryCheckpoint(every=1, kill_after_saves=kill_after_saves),
                 reference_val_batches[name])


@pytest.mark.parametrize("name", NET_PRIORS)
def test_a_resumed_val_pass_scores_only_the_batches_left(name):
    checkpoint = MemoryCheckpoint(every=1, kill_after_saves=3)  # steps 1, 2, then val batch 1
    with pytest.raises(Killed):
        fit_val_batches(name, checkpoint, Recorder())
    assert checkpoint.saved_steps == [1, 2, 2]  # the third: inside step 3, its update done
    calls: list[int] = []
    fit_val_batches(name, checkpoint.revive(), Recorder(), calls)
    assert calls == [2, 2] + [2, 2, 2]  # epoch 1's last two batches, then epoch 2's three
    uninterrupted: list[int] = []
    fit_val_batches(name, MemoryCheckpoint(every=STEPS + 1), Recorder(), uninterrupted)
    assert uninterrupted == [2] * 6


# -- the backbone ---------------------------------------------------------------------------

BACKBONE = VQVAEConfig(hidden=8, res_blocks=1, res_hidden=4, num_codes=16, code_dim=4)
BACKBONE_TRAIN = TrainConfig(epochs=6, batch_size=8, seed=2)  # 20 images: 2 steps per epoch
BACKBONE_STEPS = 12  # dead-code restarts at the 1st and the 11th update


def train_backbone(checkpoint, progress, cfg: TrainConfig = BACKBONE_TRAIN
                   ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16), dtype=np.uint8)
    torch.manual_seed(0)
    model = VQVAE(BACKBONE)
    summary = train_vqvae(model, images, cfg, device=torch.device("cpu"),
                          progress=progress, checkpoint=checkpoint)
    return model.state_dict(), summary


@pytest.fixture(scope="module")
def reference_backbone():
    progress = Recorder()
    return (*train_backbone(MemoryCheckpoint(every=BACKBONE_STEPS + 1), progress), progress)


@pytest.mark.parametrize("kill_after_saves", range(1, BACKBONE_STEPS + 1))
def test_backbone_resumed_after_any_step_is_bitwise_uninterrupted(kill_after_saves,
                                                                   reference_backbone):
    check_resume(train_backbone, MemoryCheckpoint(every=1, kill_after_saves=kill_after_saves),
                 reference_backbone)


@pytest.mark.parametrize("kill_at", [1, 9, 12])
def test_backbone_redoes_the_steps_after_its_last_checkpoint(kill_at, reference_backbone):
    check_resume(train_backbone, MemoryCheckpoint(every=4, kill_at=kill_at), reference_backbone)


# -- the mri feature extractor --------------------------------------------------------------

def train_mri(checkpoint, progress) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32), dtype=np.uint8)
    model, stats = train_encoder(images, mri.preset_config("tiny"), seed=1,
                                 device=torch.device("cpu"), progress=progress,
                                 checkpoint=checkpoint)
    return model.state_dict(), stats


@pytest.mark.parametrize("kill_after_saves", [1, 2, 3])
def test_mri_extractor_resumed_after_any_step_is_bitwise_uninterrupted(kill_after_saves):
    progress = Recorder()
    reference = (*train_mri(MemoryCheckpoint(every=99), progress), progress)
    check_resume(train_mri, MemoryCheckpoint(every=1, kill_after_saves=kill_after_saves), reference)


def test_a_fit_without_a_checkpoint_keyword_is_told_apart():
    class Plain(priors.Prior):  # an outside plug-in written before checkpoints existed
        Config = type(get_prior("uniform").Config())

        def fit(self, train, val, *, seed, progress):
            return {}

        def sample(self, n, *, generator, labels=None):
            return torch.zeros(n, *self.grid, dtype=torch.int64)

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    assert not accepts_checkpoint(Plain) and accepts_checkpoint(get_prior("pixelcnn"))
    null = priors.NullCheckpoint()
    assert null.load() is None and not null.due(1)


# -- CPU seconds through a resume ---------------------------------------------------------------

class FakeClock:
    """Stands in for the `time` module of the training loops: time moves only when a checkpoint
    is asked whether it is due (once a step), 2 s of wall time and 1 s of CPU time a step."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def process_time(self) -> float:
        return self.now / 2


class Clocked(MemoryCheckpoint):
    def __init__(self, clock: FakeClock, *, keeps_cpu: bool = True, **kw) -> None:
        super().__init__(**kw)
        self.clock, self.keeps_cpu = clock, keeps_cpu
        self.walls: list[float] = []  # the wall seconds each save held

    def due(self, step: int) -> bool:
        self.clock.now += 2.0
        return super().due(step)

    def save(self, state):
        self.walls.append(state.get("values", state)["wall_s"])  # the backbone's: in values
        if not self.keeps_cpu:  # as written before trainings kept their CPU seconds
            state = {k: v for k, v in state.items() if k != "cpu_s"}
            if "values" in state:
                state["values"] = {k: v for k, v in state["values"].items() if k != "cpu_s"}
        super().save(state)


@pytest.mark.parametrize("train", ["fit", "backbone"])
def test_cpu_seconds_add_up_through_a_resume(train, monkeypatch):
    """A fit's (and the backbone's) CPU seconds are those of the whole training, the part
    before a resume included, and its CPU share is CPU seconds / (wall seconds x threads): with
    1 CPU second per 2 wall seconds, 0.5 / threads. Resumed from a checkpoint that did not keep
    its CPU seconds, the CPU figures are left out; the rest is as ever."""
    clock = FakeClock()
    monkeypatch.setattr(trainkit, "time", clock)  # the Stopwatch both trainings keep
    run = (lambda c, p: fit_prior("pixelcnn", c, p)) if train == "fit" else train_backbone
    steps = STEPS if train == "fit" else BACKBONE_STEPS
    never = steps + 1
    _, fresh = run(Clocked(clock, every=never), Recorder())
    assert fresh["train_wall_s"] == 2.0 * steps and fresh["train_cpu_s"] == 1.0 * steps
    assert fresh["train_cpu_share"] == round(0.5 / torch.get_num_threads(), 3)
    assert fresh["train_threads"] == float(torch.get_num_threads())
    out = {}
    interrupted_then_resumed(lambda c, p: out.update(result=run(c, p)),
                             Clocked(clock, every=1, kill_after_saves=3))
    resumed = out["result"][1]
    # the backbone's checkpoint holds the times before its own step's save (one tick less)
    assert resumed["train_wall_s"] == 2.0 * steps - (2.0 if train == "backbone" else 0.0)
    assert resumed["train_cpu_s"] == resumed["train_wall_s"] / 2  # the CPU before the resume too
    assert resumed["train_cpu_share"] == fresh["train_cpu_share"]
    interrupted_then_resumed(lambda c, p: out.update(result=run(c, p)),
                             Clocked(clock, keeps_cpu=False, every=1, kill_after_saves=3))
    assert out["result"][1].keys() == fresh.keys() - {"train_cpu_s", "train_cpu_share"}


@pytest.mark.parametrize("train", ["fit", "backbone"])
def test_a_resume_under_another_thread_count_divides_each_part_by_its_own(train, monkeypatch):
    """Killed at 1 thread and resumed at 2, a training's CPU share is its CPU seconds over
    (wall before the resume x 1 + wall after x 2), not over its whole wall x 2."""
    clock = FakeClock()
    monkeypatch.setattr(trainkit, "time", clock)
    run = (lambda c, p: fit_prior("pixelcnn", c, p)) if train == "fit" else train_backbone
    threads, checkpoint = torch.get_num_threads(), Clocked(clock, every=1, kill_after_saves=3)
    try:
        torch.set_num_threads(1)
        with pytest.raises(Killed):
            run(checkpoint, Recorder())
        before = checkpoint.walls[-1]  # the wall seconds the resume starts from
        torch.set_num_threads(2)
        result = run(checkpoint.revive(), Recorder())[1]
    finally:
        torch.set_num_threads(threads)
    core_s = before * 1 + (result["train_wall_s"] - before) * 2
    assert result["train_threads"] == 2.0 and before > 0
    assert result["train_cpu_share"] == round(result["train_cpu_s"] / core_s, 3)
    assert result["train_cpu_share"] != round(result["train_cpu_s"] / (2 * result["train_wall_s"]), 3)


def test_the_cpu_share_is_left_out_where_it_would_mislead():
    """On CUDA the CPU waits on the GPU, under DDP the run's own ranks share the cores: no
    share there, only the wall time and threads."""
    from trainkit import cpu_times
    assert cpu_times(10.0, 5.0, torch.device("cpu"), 1)["train_cpu_s"] == 5.0
    for device, world in ((torch.device("cuda"), 1), (torch.device("cpu"), 2)):
        assert set(cpu_times(10.0, 5.0, device, world)) == {"train_wall_s", "train_threads"}


def test_bits_killed_part_way_resume_from_the_batches_done_to_the_same_value(monkeypatch):
    """The test bits/code after a fit (maskgit: 10 forwards per test grid) is resumable:
    killed after some batches, it goes on from the log-likelihoods it saved, evaluating only the
    rest, and ends at exactly the uninterrupted value, its seconds those before the last save
    plus those after the resume; a state saved for other weights, grids or labels is
    ignored."""
    clock = FakeClock()
    monkeypatch.setattr(trainkit, "time", clock)
    cls = get_prior("transformer")  # conditional: its log-likelihood depends on the labels
    prior = cls(cls.preset("tiny"), num_codes=K, grid=GRID, num_classes=3)
    test = codes(20, 5)
    plain = measure_bits(prior, test, batch=3)
    assert plain.bits is not None and plain.resumed == 0
    checkpoint = Clocked(clock, every=2, kill_at=5)  # 2 s a batch; saves after batches 2 and 4
    with pytest.raises(Killed):
        measure_bits(prior, test, batch=3, checkpoint=checkpoint)
    assert checkpoint.saved_steps == [2, 4] and checkpoint.walls == [4.0, 8.0]
    evaluated, log_prob = [], prior.log_prob
    prior.log_prob = lambda c, labels=None: evaluated.append(len(c)) or log_prob(c, labels)
    progress = Recorder()
    again = measure_bits(prior, test, batch=3, checkpoint=checkpoint.revive(), progress=progress)
    assert (again.bits, again.resumed, sum(evaluated)) == (plain.bits, 12, 8)
    assert again.wall_s == 8.0 + 2 * 2.0  # 7 batches: 5 and 6 tick the clock, the last does not
    assert progress.descriptions == ["bits/code on the test split (resumed at 12 of 20 grids)"]
    assert len(progress.ticks) == 20
    prior.log_prob = log_prob
    other_labels = CodeSet(test.codes, K, (test.labels + 1) % 3)
    other_codes = CodeSet(codes(20, 6).codes, K, test.labels)
    other_weights = cls(cls.preset("tiny"), num_codes=K, grid=GRID, num_classes=3)
    with torch.no_grad():
        next(other_weights.net.parameters()).add_(0.5)
    for p, t in ((prior, other_labels), (prior, other_codes), (other_weights, test)):
        fresh = measure_bits(p, t, batch=3, checkpoint=checkpoint)
        assert fresh.resumed == 0 and fresh.bits == measure_bits(p, t, batch=3).bits
        assert fresh.bits != plain.bits
