"""Metrics as pure functions: tensors or feature matrices in, numbers out. No I/O."""

from bench.metrics.codes import (bits_per_code, code_histogram, code_usage, distinct_codes,
                                 js_divergence, perplexity)
from bench.metrics.distribution import frechet_distance, kid, precision_recall
from bench.metrics.image import (MIN_CODES, MIN_SPREAD, degenerate_reconstruction, diversity,
                                 psnr, spread_ratios, ssim, ssim_matrix)
from bench.metrics.memorisation import memorisation, memorisation_threshold, memorised_share, nn_ssim

__all__ = [
    "ssim", "psnr", "ssim_matrix", "nn_ssim", "memorisation", "memorisation_threshold",
    "memorised_share", "diversity", "spread_ratios", "degenerate_reconstruction", "MIN_SPREAD",
    "MIN_CODES",
    "frechet_distance", "kid", "precision_recall",
    "code_histogram", "perplexity", "distinct_codes", "js_divergence", "code_usage",
    "bits_per_code",
]
