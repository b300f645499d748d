"""The frozen VQ-VAE backbone: model, training, encode/decode, save/load and code export."""

from vqvae.io import (CheckpointError, CodeExport, backbone_hash, load_backbone, load_export,
                      save_backbone, save_export)
from vqvae.model import VQVAE, Decoder, Encoder, Quantizer, VQVAEConfig
from vqvae.train import (Checkpoint, NullCheckpoint, TrainConfig, decode_codes, encode_array,
                         train_vqvae)

__all__ = ["VQVAE", "VQVAEConfig", "Encoder", "Decoder", "Quantizer", "TrainConfig",
           "Checkpoint", "NullCheckpoint",
           "train_vqvae", "encode_array", "decode_codes", "CheckpointError", "CodeExport",
           "backbone_hash", "save_backbone", "load_backbone", "save_export", "load_export"]
