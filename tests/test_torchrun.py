"""`bench run` under torchrun (bench/torchrun.py): the launcher's variables, the batch check,
sampling that gives the same grids for any number of ranks, and real `torchrun
--nproc-per-node 2` runs on CPU (gloo) against one process at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import priors
from bench import run as bench_run
from bench.errors import BenchError
from bench.run import RunConfig, curve_name, device_name
from bench.sampling import chunk_seed, sample_prior
from bench.torchrun import Ranks, check_batches, session, torchrun_env
from tests.test_distributed import free_port, rendezvous

needs_gloo = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")
ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}


# --- the launcher's variables and the checks before any work ---------------------------------


def test_torchrun_variables_give_the_ranks():
    assert torchrun_env({}) is None
    assert torchrun_env(ENV) == Ranks(rank=1, world=2, local_rank=1)


@pytest.mark.parametrize("env, match", [
    ({"RANK": "0"}, "WORLD_SIZE, LOCAL_RANK missing"),
    (ENV | {"RANK": "one"}, "must be integers"),
    (ENV | {"RANK": "2"}, "0 <= RANK < WORLD_SIZE"),
    (ENV | {"LOCAL_RANK": "-1"}, "LOCAL_RANK >= 0"),
])
def test_bad_torchrun_variables_are_refused(env, match):
    with pytest.raises(BenchError, match=match):
        torchrun_env(env)


def test_without_torchrun_or_with_one_rank_the_session_is_one_process():
    for env in ({}, {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}):
        with session(torch.device("cpu"), timeout_s=1, environ=env) as ranks:
            assert ranks == Ranks() and ranks.lead and not dist.is_initialized()
            assert ranks.share(lambda: 3, tag="x") == 3 and ranks.gather(4) == [4]


def test_batches_must_split_evenly_over_the_ranks():
    check_batches(4, {"the backbone": 16, "the prior's": 32})
    with pytest.raises(BenchError, match="the prior's batch_size 30 does not split over 4 ranks"):
        check_batches(4, {"the backbone": 16, "the prior's": 30})


def test_the_batch_sizes_checked_are_the_presets():
    sizes = bench_run.batch_sizes(RunConfig(prior="pixelcnn", preset="tiny"),
                                  bench_run.get_preset("tiny"))
    assert sizes["the backbone"] == 16 and "the pixelcnn prior's" in sizes
    assert list(bench_run.batch_sizes(RunConfig(prior="uniform", preset="tiny"),
                                      bench_run.get_preset("tiny"))) == ["the backbone"]


def test_ddp_timeout_must_be_positive():
    with pytest.raises(BenchError, match="--ddp-timeout must be > 0 seconds, got 0"):
        RunConfig(ddp_timeout_s=0)


def test_cuda_ranks_use_their_local_gpu():
    assert Ranks(rank=3, world=4, local_rank=1).place(torch.device("cuda")) == torch.device("cuda", 1)
    assert Ranks(rank=3, world=4, local_rank=1).place(torch.device("cpu")) == torch.device("cpu")


def test_records_name_the_ranks_but_curves_do_not_carry_a_resume():
    assert device_name(torch.device("cpu")).endswith("threads)")
    assert device_name(torch.device("cpu"), 2).endswith("threads) x 2 ranks")
    assert curve_name("fit pixelcnn (resumed at step 40)") == "fit pixelcnn"
    assert curve_name("backbone") == "backbone"


def session_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two ranks started as torchrun would (environment variables): rank 0's error
    reaches rank 1, then rank 1 waits for rank 0 past the timeout."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    seen: dict[str, str] = {}
    try:
        with session(torch.device("cpu"), timeout_s=2) as ranks:
            seen["ranks"] = f"{ranks.rank}/{ranks.world}"
            try:
                ranks.share(lambda: int("x"), tag="parse")  # fails on rank 0 only
            except (ValueError, BenchError) as e:
                seen["error"] = f"{type(e).__name__}: {e}"
            if ranks.lead:
                time.sleep(5)  # past the others' timeout
            ranks.lead_first(lambda: None, tag="late")
    except Exception as e:  # noqa: BLE001 - rank 0 may see its peer gone; rank 1 the timeout
        seen["end"] = f"{type(e).__name__}: {e}"
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(seen))


@needs_gloo
def test_torchrun_ranks_share_rank0s_error_and_time_out(tmp_path):
    mp.spawn(session_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert rank0["ranks"] == "0/2" and rank1["ranks"] == "1/2"
    assert rank0["error"].startswith("ValueError: invalid literal")
    assert rank1["error"] == ("BenchError: rank 0 failed, so rank 1 stops too: "
                              + rank0["error"])
    assert rank1["end"].startswith("BenchError: rank 1 waited over --ddp-timeout 2 s")
    assert not dist.is_initialized()


# --- sampling: the same grids for any number of ranks ----------------------------------------


def tiny_prior() -> priors.Prior:
    cls = priors.get_prior("pixelcnn")
    return cls(cls.preset("tiny"), num_codes=6, grid=(3, 3))  # unfitted: a seeded init


def test_each_batch_of_samples_has_its_own_generator():
    prior = tiny_prior()
    codes = sample_prior(prior, 10, seed=5, labels=None, batch=4)
    for chunk, i in enumerate(range(0, 10, 4)):
        gen = torch.Generator().manual_seed(chunk_seed(5, chunk))
        assert torch.equal(codes[i:i + 4], prior.sample(min(4, 10 - i), generator=gen))
    assert chunk_seed(5, 0) == 5 and chunk_seed(4, 1) != chunk_seed(5, 0)


def sample_worker(rank: int, world: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous(out_dir), rank=rank, world_size=world)
    try:
        codes = sample_prior(tiny_prior(), 10, seed=5, labels=None, batch=4,
                             ranks=Ranks(rank=rank, world=world))
        torch.save({"codes": codes}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@needs_gloo
@pytest.mark.parametrize("world", [2, 3])  # 3 batches of samples: 2 + 1 and 1 + 1 + 1
def test_ranks_sample_the_grids_of_one_process(world, tmp_path):
    mp.spawn(sample_worker, args=(world, str(tmp_path)), nprocs=world)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["codes"] for r in range(world)]
    assert torch.equal(got[0], sample_prior(tiny_prior(), 10, seed=5, labels=None, batch=4))
    assert all(codes is None for codes in got[1:])


# --- real runs: torchrun --nproc-per-node 2 against one process -------------------------------


def bench_args(out: Path) -> list[str]:
    return ["-m", "bench", "run", "--prior", "pixelcnn", "--preset", "tiny", "--device", "cpu",
            "--out", str(out), "--threads", "1", "--checkpoint-every", "0"]


def launch(args: list[str], ranks: int = 0) -> subprocess.CompletedProcess:
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    done = subprocess.run([sys.executable, *(torchrun if ranks else []), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def final_losses(out: Path) -> dict[str, float]:
    [backbone] = out.glob("backbones/*/backbone.json")
    [record] = prior_records(out)
    return {"backbone": json.loads(backbone.read_text())["meta"]["summary"]["final_mse"],
            "pixelcnn": record["curves"]["fit pixelcnn"]["train_bits_per_code"][-1]}


def prior_records(out: Path) -> list[dict]:
    recs = [json.loads(p.read_text()) for p in out.glob("runs/*/record.json")]
    return [r for r in recs if r["kind"] == "prior"]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    launch(bench_args(root / "one"))
    first = launch(bench_args(root / "two"), ranks=2)
    again = launch(bench_args(root / "two"), ranks=2)
    return root / "one", root / "two", first, again


@needs_gloo
@pytest.mark.slow
def test_two_ranks_train_to_the_losses_of_one_process(one_and_two):
    one, two, _, _ = one_and_two
    single, double = final_losses(one), final_losses(two)
    for stage in ("backbone", "pixelcnn"):
        assert double[stage] == pytest.approx(single[stage], rel=0.02), stage


@needs_gloo
@pytest.mark.slow
def test_two_ranks_write_one_record_and_one_report(one_and_two):
    one, two, first, again = one_and_two
    [record] = prior_records(two)
    assert record["device"].endswith("x 2 ranks") and list(record["curves"]) == ["fit pixelcnn"]
    assert len(list(two.glob("runs/*"))) == len(list(one.glob("runs/*"))) == 3  # + 2 ceilings
    assert not list(two.glob(".staging/*")) and not list(two.glob(".partial/*"))
    assert first.stdout.count("pixelcnn · seed 0") == 1  # rank 0 alone prints the results
    assert "identical finished run found" in again.stderr  # second launch: nothing recomputed
    assert prior_records(two) == [record]
