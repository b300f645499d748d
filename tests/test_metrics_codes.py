"""Code-usage metrics and bits/code on known values."""

import math

import pytest
import torch

from bench.metrics import bits_per_code, code_histogram, distinct_codes, js_divergence, perplexity


def test_code_histogram_counts_a_whole_split():
    codes = torch.tensor([[[0, 1], [1, 3]], [[3, 3], [0, 1]]], dtype=torch.int16)
    assert code_histogram(codes, 5).tolist() == [2, 3, 0, 3, 0]


def test_perplexity_and_distinct_codes_known_values():
    K = 16
    uniform = torch.full((K,), 7)
    assert perplexity(uniform) == pytest.approx(K)
    one = torch.zeros(K, dtype=torch.long)
    one[3] = 100
    assert perplexity(one) == pytest.approx(1.0)
    assert distinct_codes(uniform) == K and distinct_codes(one) == 1
    half = torch.tensor([5, 5, 0, 0])
    assert perplexity(half) == pytest.approx(2.0)


def test_js_divergence_known_values():
    p = torch.tensor([3, 1, 0, 0])
    assert js_divergence(p, p * 10) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(p, torch.tensor([0, 0, 2, 2])) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): JS = 1.5 - 0.75 * log2(3) bits
    assert js_divergence(torch.tensor([1, 0]), torch.tensor([1, 1])) == pytest.approx(1.5 - 0.75 * math.log2(3))


def test_bits_per_code_uniform_prior_is_log2_K():
    K, grid = 512, (8, 8)
    log_prob = torch.full((10,), -64 * math.log(K))
    assert bits_per_code(log_prob, grid) == pytest.approx(math.log2(K))
    assert bits_per_code(torch.tensor([-2 * math.log(2), -6 * math.log(2)]), (2, 1)) == pytest.approx(2.0)


def test_code_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="K must be >= 1"):
        code_histogram(torch.zeros(3, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="integer tensor"):
        code_histogram(torch.zeros(3), 4)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\)"):
        code_histogram(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match="1-D histogram"):
        perplexity(torch.ones(2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        distinct_codes(torch.tensor([1, -1]))
    with pytest.raises(ValueError, match="empty"):
        perplexity(torch.zeros(4))
    with pytest.raises(ValueError, match="same shape"):
        js_divergence(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match=r"non-empty \(N,\) tensor"):
        bits_per_code(torch.ones(2, 2), (2, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        bits_per_code(torch.tensor([float("nan")]), (2, 2))
    with pytest.raises(ValueError, match="positive sides"):
        bits_per_code(torch.ones(2), (0, 2))
