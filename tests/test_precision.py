"""Training precision: fp32 | bf16 | auto in the backbone's and the priors' configs, preset files
and `bench run --precision`; bf16 autocast on CPU keeps the quantizer in fp32; auto and the
backbone's cache key. CPU bf16 support (`trainkit.native_bf16_cpu`) is patched where a test needs one answer on any CPU."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import priors
import trainkit
import vqvae
from bench.cli import app
from bench.errors import BenchError
from bench.presets import get_preset, load_preset
from bench.run import RunConfig, run_artefact
from bench.stages import backbone_artefact, check_precision, precision_keyed
from bench.store import Artefact
from priors import CodeSet, NullProgress
from priors.netprior import FitConfig, NetPrior
from vqvae import VQVAE, TrainConfig, VQVAEConfig, train_vqvae

TINY = VQVAEConfig(hidden=16, res_blocks=1, res_hidden=8, num_codes=16, code_dim=8)
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


def native(monkeypatch, value: bool) -> None:
    monkeypatch.setattr(trainkit, "native_bf16_cpu", lambda: value)


def test_bad_precision_values_fail_in_one_line_naming_the_choices():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto, got 'fp16'"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto, got 'half'"):
        FitConfig(precision="half")
    with pytest.raises(BenchError, match="unknown precision 'fp16'; available: fp32, bf16, auto"):
        get_preset("tiny").with_precision("fp16")


def test_auto_is_bf16_on_cuda_and_on_a_cpu_with_native_bf16(monkeypatch):
    native(monkeypatch, True)
    assert trainkit.resolve_precision("auto", CPU) == "bf16"
    native(monkeypatch, False)
    assert trainkit.resolve_precision("auto", CPU) == "fp32"
    assert trainkit.resolve_precision("auto", CUDA) == "bf16"
    assert trainkit.resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ValueError, match="precision 'bf16' asked for, but this cpu has no native"):
        trainkit.resolve_precision("bf16", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        trainkit.resolve_precision("fp64", CPU)


def test_auto_on_a_native_cpu_is_each_prior_class_measured_choice(monkeypatch):
    native(monkeypatch, True)
    assert trainkit.resolve_precision("auto", CPU, cpu_auto="fp32") == "fp32"
    assert trainkit.resolve_precision("auto", CUDA, cpu_auto="fp32") == "bf16"

    def chosen(side: int) -> dict[str, str]:
        names = ("pixelcnn", "gated-pixelcnn", "transformer", "maskgit")
        return {name: priors.get_prior(name)(priors.get_prior(name).preset("tiny"), num_codes=8,
                                             grid=(side, side)).training_precision()
                for name in names}

    # as measured: the PixelCNNs gain at every size, the attention priors from 32x32 grids
    assert chosen(16) == {"pixelcnn": "bf16", "gated-pixelcnn": "bf16", "transformer": "fp32",
                          "maskgit": "fp32"}
    assert set(chosen(32).values()) == {"bf16"}
    native(monkeypatch, False)
    assert set(chosen(32).values()) == {"fp32"}


def test_a_prior_that_was_not_measured_trains_in_fp32_under_auto(monkeypatch):
    native(monkeypatch, True)

    class Unmeasured(priors.get_prior("pixelcnn")):
        cpu_bf16_from_positions = NetPrior.cpu_bf16_from_positions

    prior = Unmeasured(Unmeasured.preset("tiny"), num_codes=8, grid=(64, 64))
    assert prior.training_precision() == "fp32"


def test_a_bf16_backbone_step_on_cpu_keeps_the_quantizer_in_fp32(monkeypatch):
    native(monkeypatch, True)  # autocast on CPU runs anywhere; only its speed needs native bf16
    model, seen = VQVAE(TINY), {}
    model.encoder.register_forward_hook(lambda m, i, out: seen.update(z_e=out.dtype))
    model.quantizer.register_forward_hook(lambda m, i, out: seen.update(z_q=out[0].dtype,
                                                                         loss=out[1].dtype))
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32), dtype=np.uint8)
    summary = train_vqvae(model, images, TrainConfig(epochs=1, batch_size=4, precision="bf16"),
                          device=CPU, progress=NullProgress())
    assert summary["precision"] == "bf16" and np.isfinite(summary["final_mse"])
    assert seen == {"z_e": torch.bfloat16, "z_q": torch.float32, "loss": torch.float32}
    q = model.quantizer
    assert q.codebook.dtype == q.ema_size.dtype == q.ema_sum.dtype == torch.float32


def test_fp32_trains_without_autocast():
    model, seen = VQVAE(TINY), {}
    model.encoder.register_forward_hook(lambda m, i, out: seen.update(z_e=out.dtype))
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32), dtype=np.uint8)
    summary = train_vqvae(model, images, TrainConfig(epochs=1, batch_size=4, precision="fp32"),
                          device=CPU, progress=NullProgress())
    assert summary["precision"] == "fp32" and seen == {"z_e": torch.float32}


@pytest.mark.parametrize("precision,flag", [("bf16", 1.0), ("fp32", 0.0)])
def test_a_network_prior_fits_at_its_precision(monkeypatch, precision, flag):
    native(monkeypatch, True)
    cls = priors.get_prior("pixelcnn")
    cfg = dataclasses.replace(cls.preset("tiny"), precision=precision, epochs=1)
    prior = cls(cfg, num_codes=8, grid=(4, 4))
    codes = torch.randint(0, 8, (10, 4, 4), generator=torch.Generator().manual_seed(0))
    summary = prior.fit(CodeSet(codes[:8], 8), CodeSet(codes[8:], 8), seed=0,
                        progress=NullProgress())
    assert summary["bf16_autocast"] == flag and np.isfinite(summary["val_bits_per_code"])
    assert all(p.dtype == torch.float32 for p in prior.net.parameters())


def test_with_precision_sets_the_backbone_and_every_network_prior():
    tiny = get_preset("tiny")
    assert tiny.with_precision(None) is tiny
    bf16 = tiny.with_precision("bf16")
    assert bf16.train.precision == "bf16"
    assert bf16.content_hash == tiny.content_hash  # precision is keyed as resolved, not as set
    for name in ("pixelcnn", "transformer", "maskgit", "gated-pixelcnn"):
        assert bf16.prior_config(priors.get_prior(name)).precision == "bf16"
    assert bf16.prior_config(priors.get_prior("uniform")) == tiny.prior_config(
        priors.get_prior("uniform"))  # no precision field: untouched


def test_a_preset_file_sets_precisions_and_a_bad_one_names_its_key():
    text = (Path(vqvae.__file__).parents[1] / "bench" / "presets" / "tiny.toml").read_text()
    mine = load_preset(text + 'precision = "fp32"\n[priors.maskgit]\nprecision = "bf16"\n',
                       name="mine", source="mine.toml")
    assert mine.train.precision == "fp32"
    assert mine.prior_config(priors.get_prior("maskgit")).precision == "bf16"
    with pytest.raises(BenchError, match="mine.toml: train: precision must be one of"):
        load_preset(text + 'precision = "fp16"\n', name="mine", source="mine.toml")


def test_the_backbone_key_names_the_resolved_precision(monkeypatch):
    ds, tiny = SimpleNamespace(fingerprint="f"), get_preset("tiny")
    key = lambda p: backbone_artefact(tiny.with_precision(p), ds, 0, CPU).key  # noqa: E731
    native(monkeypatch, True)
    assert key("auto") == key("bf16") != key("fp32")
    native(monkeypatch, False)
    assert key("auto") == key("fp32")


def test_keys_name_the_resolved_precision_even_fp32():
    """Every key names the precision as it ran, fp32 too: keys without one were trained by the
    older loop (NCHW; on CUDA in bf16), never taken for this one's."""
    fields = {"epochs": 2, "lr": 0.1, "precision": "auto"}
    assert precision_keyed(fields, "fp32") == {"epochs": 2, "lr": 0.1, "precision": "fp32"}
    assert precision_keyed(fields, "bf16") == {"epochs": 2, "lr": 0.1, "precision": "bf16"}
    ds, tiny = SimpleNamespace(fingerprint="f"), get_preset("tiny").with_precision("fp32")
    train = {k: v for k, v in dataclasses.asdict(tiny.train).items() if k != "precision"}
    before = Artefact.of("backbones", {"data": "f", "vqvae": dataclasses.asdict(tiny.vqvae),
                                       "train": train, "seed": 0,
                                       "max_train_images": tiny.max_train_images})
    assert backbone_artefact(tiny, ds, 0, CPU).key != before.key


def test_a_run_key_names_the_prior_precision_as_resolved(monkeypatch):
    tiny, export = get_preset("tiny"), SimpleNamespace(export_hash="e")
    cls = priors.get_prior("pixelcnn")

    def key(precision: str) -> str:
        prior = cls(tiny.with_precision(precision).prior_config(cls), num_codes=8, grid=(4, 4))
        cfg = RunConfig(prior="pixelcnn", precision=precision)
        return run_artefact(cfg, tiny, prior, export, "x", 10).key

    native(monkeypatch, True)
    assert key("auto") == key("bf16") != key("fp32")
    native(monkeypatch, False)
    assert key("auto") == key("fp32")


def test_bf16_on_a_cpu_without_it_fails_before_any_work(monkeypatch, tmp_path):
    native(monkeypatch, False)
    with pytest.raises(BenchError, match="backbone: precision 'bf16' asked for"):
        check_precision(get_preset("tiny").with_precision("bf16"), priors.get_prior("uniform"),
                        CPU)
    mixed = get_preset("tiny").with_precision("fp32")
    mixed = dataclasses.replace(mixed, precision="bf16")  # the prior's alone
    with pytest.raises(BenchError, match="prior pixelcnn: precision 'bf16' asked for"):
        check_precision(mixed, priors.get_prior("pixelcnn"), CPU)
    result = CliRunner().invoke(app, ["run", "--prior", "uniform", "--preset", "tiny", "--device",
                                      "cpu", "--precision", "bf16", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [ln for ln in result.stderr.splitlines() if ln.startswith("error:")] == [
        "error: backbone: precision 'bf16' asked for, but this cpu has no native bf16 "
        "(AVX512-BF16 or AMX); use precision fp32 or auto"]
    assert not (tmp_path / "data").exists()


def test_bad_precision_option_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["run", "--precision", "fp16", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown --precision 'fp16'; available: fp32, bf16, auto" in result.stderr


@pytest.mark.slow
def test_run_precision_reaches_backbone_and_prior(tmp_path):
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["run", "--prior", "pixelcnn", "--preset", "tiny", "--device",
                                      "cpu", "--precision", "fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(next((out / "runs").glob("pixelcnn-*/record.json")).read_text())
    assert record["fit"]["bf16_autocast"] == 0.0 and record["config"]["precision"] == "fp32"
    backbone = json.loads((out / record["artefacts"]["backbone"] / "backbone.json").read_text())
    assert backbone["meta"]["summary"]["precision"] == "fp32"
    assert backbone["meta"]["train"]["precision"] == "fp32"
