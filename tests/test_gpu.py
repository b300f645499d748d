"""The GPU path end to end: skipped without CUDA (CI has none); run on a lent GPU machine with
`python -m pytest tests/test_gpu.py`. Every built-in prior through `bench run --device cuda` on
the tiny preset (an adni-layout fixture: `mni` needs nilearn's template, which a GPU machine
may not have), and the nearest-SSIM search given CUDA tensors."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import priors
from bench.cli import app
from bench.metrics.nearest import exceeds, nearest_ssim
from tests.conftest_data import make_adni
from tests.test_metrics_image import brain_phantoms

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_nearest_search_takes_cuda_tensors_and_answers_like_cpu():
    refs, queries = brain_phantoms(30, size=32, seed=1), brain_phantoms(6, size=32, seed=2)
    on_cpu = nearest_ssim(queries, refs)
    on_gpu = nearest_ssim(queries.cuda(), refs.cuda())
    assert torch.equal(on_gpu.values, on_cpu.values) and torch.equal(on_gpu.index, on_cpu.index)
    t = float(on_cpu.values.median())
    assert torch.equal(exceeds(queries.cuda(), refs.cuda(), t), exceeds(queries, refs, t))


@pytest.mark.parametrize("prior", priors.available_priors())
def test_every_prior_runs_on_cuda(prior, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()  # shared by the priors: the backbone is built once
    out, data = base / "gpu-results", base / "gpu-adni"
    if not data.exists():
        make_adni(data, train=12, test=10, slices=4)
    result = CliRunner().invoke(app, ["run", "--prior", prior, "--preset", "tiny", "--device",
                                      "cuda", "--dataset", f"adni:{data}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(next((out / "runs").glob(f"{prior}-*/record.json")).read_text())
    assert record["device"].startswith("cuda")
    for key in ("fd", "kid", "nn_ssim", "memorisation", "precision", "recall"):
        assert math.isfinite(record["scores"][key]), key
