"""Frozen backbones and code exports on disk: safetensors + JSON, content-hashed.

A backbone is identified by the hash of its config and weights. A code export names that hash
in its manifest; loading an export against a different backbone is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from vqvae.model import VQVAE, VQVAEConfig

EXPORT_FORMAT = 1
SPLITS = ("train", "val", "test")


class CheckpointError(ValueError):
    """A backbone or export on disk is missing, corrupt, truncated or from another backbone."""


def tensors_hash(tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """sha256 over canonical JSON `meta` and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    """safetensors file at `path` (atomicity is the caller's: bench stages whole folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_tensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt or truncated checkpoint {path}: {e}") from None


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt JSON {path}: {e}") from None


# --- backbone ---------------------------------------------------------------------------------


def backbone_hash(model: VQVAE) -> str:
    return tensors_hash(model.state_dict(), dataclasses.asdict(model.cfg))


def save_backbone(model: VQVAE, directory: Path, meta: dict[str, Any]) -> str:
    """Write model.safetensors + backbone.json into `directory`; returns the backbone hash."""
    digest = backbone_hash(model)
    save_tensors(directory / "model.safetensors", model.state_dict())
    write_json(directory / "backbone.json",
               {"hash": digest, "config": dataclasses.asdict(model.cfg), "meta": meta})
    return digest


def load_backbone(directory: Path) -> tuple[VQVAE, dict[str, Any]]:
    """Load and verify a frozen backbone. Returns the model (eval mode) and its JSON record."""
    record = read_json(directory / "backbone.json")
    try:
        cfg = VQVAEConfig(**record["config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"bad backbone config in {directory / 'backbone.json'}: {e}") from None
    state = load_tensors(directory / "model.safetensors")
    model = VQVAE(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {directory} do not fit the config: "
                              f"{str(e).splitlines()[0]}") from None
    digest = backbone_hash(model)
    if digest != record.get("hash"):
        raise CheckpointError(f"backbone {directory} fails its hash check "
                              f"(recorded {str(record.get('hash'))[:12]}, got {digest[:12]})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, record


# --- code export ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeExport:
    codes: dict[str, Tensor]  # split -> (N, h, w) int64
    labels: dict[str, Tensor]  # split -> (N,) int64; empty when unlabelled
    codebook: Tensor  # (K, D) float32, frozen
    manifest: dict[str, Any]

    @property
    def num_codes(self) -> int:
        return int(self.manifest["num_codes"])

    @property
    def grid(self) -> tuple[int, int]:
        h, w = self.manifest["grid"]
        return (int(h), int(w))

    @property
    def backbone_hash(self) -> str:
        return str(self.manifest["backbone_hash"])

    @property
    def export_hash(self) -> str:
        return str(self.manifest["export_hash"])

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("label_names", ()))


def save_export(directory: Path, *, codes: dict[str, Tensor], labels: dict[str, Tensor],
                codebook: Tensor, backbone: str, meta: dict[str, Any]) -> CodeExport:
    """Write codes.safetensors (int16 codes) + manifest.json into `directory`."""
    if set(codes) != set(SPLITS):
        raise ValueError(f"an export needs splits {SPLITS}, got {sorted(codes)}")
    K = codebook.shape[0]
    if K > 32767:
        raise ValueError(f"int16 export holds at most 32767 codes, got K={K}")
    tensors = {f"codes/{s}": codes[s].to(torch.int16) for s in SPLITS}
    tensors |= {f"labels/{s}": labels[s].to(torch.int64) for s in labels}
    tensors["codebook"] = codebook.float()
    grid = list(codes["train"].shape[1:])
    manifest = {"format": EXPORT_FORMAT, "backbone_hash": backbone, "num_codes": K, "grid": grid,
                "counts": {s: int(codes[s].shape[0]) for s in SPLITS}, **meta}
    manifest["export_hash"] = tensors_hash(tensors, manifest)
    save_tensors(directory / "codes.safetensors", tensors)
    write_json(directory / "manifest.json", manifest)
    return load_export(directory, backbone=backbone)


def load_export(directory: Path, *, backbone: str | None = None) -> CodeExport:
    """Load a code export; refuse it if it belongs to another backbone or fails its hash."""
    manifest = read_json(directory / "manifest.json")
    if manifest.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"code export {directory} has format {manifest.get('format')!r}; "
                              f"this version reads format {EXPORT_FORMAT}: re-export the codes")
    if backbone is not None and manifest.get("backbone_hash") != backbone:
        raise CheckpointError(
            f"code export {directory} was made by backbone {str(manifest.get('backbone_hash'))[:12]}, "
            f"not {backbone[:12]}; re-export the codes with this backbone")
    tensors = load_tensors(directory / "codes.safetensors")
    recorded = dict(manifest)
    digest = recorded.pop("export_hash", None)
    if tensors_hash(tensors, recorded) != digest:
        raise CheckpointError(f"code export {directory} fails its hash check")
    codes = {s: tensors[f"codes/{s}"].long() for s in SPLITS}
    labels = {s: tensors[f"labels/{s}"] for s in SPLITS if f"labels/{s}" in tensors}
    return CodeExport(codes=codes, labels=labels, codebook=tensors["codebook"], manifest=manifest)
