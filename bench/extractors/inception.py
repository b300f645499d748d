"""The standard FID Inception-v3 (2048-d pool3, TF-compatible weights) via torch-fidelity.

An optional extra: torch-fidelity needs torchvision, which does not import against every torch
build. Missing pieces are a BenchError saying what to do, never a silent substitute.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from bench.errors import ArtefactError, BenchError
from bench.extractors.base import FeatureExtractor
from bench.store import file_sha256

WEIGHT_FILES = ("pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid's name
                "weights-inception-2015-12-05-6726825d.pth")  # torch-fidelity's download name
HOW_TO = ("inception extractor needs torch-fidelity and the weights file {w}: pip install "
          "'vq-prior-bench[inception]' on a machine with a torchvision matching torch, then pass "
          "--fid-weights PATH or put it in {hub}; or use --extractor mri")


def _how_to() -> str:
    return HOW_TO.format(w=WEIGHT_FILES[0], hub=Path(torch.hub.get_dir()) / "checkpoints")


def _import_inception():
    """torch-fidelity's extractor class; torchvision may fail with any error at import."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as e:  # ImportError, or RuntimeError "operator torchvision::nms does not exist"
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise BenchError(f"{_how_to()} (import failed: {reason})") from None
    return FeatureExtractorInceptionV3


def resolve_weights(weights_path: Path | None) -> Path:
    """The given file, else the first known weight file in the torch hub cache (TORCH_HOME)."""
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise BenchError(f"--fid-weights {path} is not a file; {_how_to()}")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in WEIGHT_FILES:
        if (hub / name).is_file():
            return hub / name
    raise BenchError(f"no Inception weights in {hub}; {_how_to()}")


class InceptionExtractor(FeatureExtractor):
    name = "inception"
    dim = 2048

    def __init__(self, model: torch.nn.Module, weights_hash: str, device: torch.device) -> None:
        self.model, self.device = model.to(device).eval(), device
        self.id = f"inception-{weights_hash[:16]}"

    def _embed(self, x: Tensor) -> Tensor:
        rgb = (x * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)  # grey -> 3 identical channels
        (pool3,) = self.model(rgb)  # torch-fidelity resizes to 299 itself, TF1-style bilinear
        return pool3


def build_inception(*, device: torch.device, weights_path: Path | None = None) -> InceptionExtractor:
    cls = _import_inception()
    path = resolve_weights(weights_path)
    try:  # refuse anything but a plain state dict before torch-fidelity unpickles it unrestricted
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ArtefactError(f"Inception weights {path} are not a loadable state dict "
                            f"({type(e).__name__}); download {WEIGHT_FILES[0]} again") from None
    model = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=os.fspath(path))
    return InceptionExtractor(model, file_sha256(path), device)
