"""Generative priors over VQ-VAE code grids. Importing this package registers the built-ins."""

from priors.base import (
    ENTRY_POINT_GROUP,
    PRESETS,
    REGISTRY,
    Checkpoint,
    CodeSet,
    NoLikelihoodError,
    NullCheckpoint,
    NullProgress,
    Prior,
    PriorError,
    Progress,
    accepts_checkpoint,
    available_priors,
    get_prior,
    register_prior,
)
from priors import (  # noqa: F401  (registers the built-ins)
    dcgan, gated_pixelcnn, maskgit, pixelcnn, transformer, uniform, unigram)

__all__ = [
    "ENTRY_POINT_GROUP", "PRESETS", "REGISTRY", "Checkpoint", "CodeSet", "NoLikelihoodError",
    "NullCheckpoint", "NullProgress", "Prior", "PriorError", "Progress", "accepts_checkpoint",
    "available_priors", "get_prior", "register_prior",
]
