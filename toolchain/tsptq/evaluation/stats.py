"""Uncertainty of accuracy measurements: paired bootstrap intervals over images, and McNemar's test.

Every statistic here is a mean over images of a per-image value in {-1, 0, 1} (a top-1 difference between two
models seen on the same images) or in {0, 1} (agreement with FP32). Resampling N images with replacement then only
changes how many images fall in each category, so the paired bootstrap is drawn exactly as a multinomial over the
categories: the same distribution as resampling image indices, at a cost independent of N. Seeded: the same inputs
give the same interval on every machine and in every process.
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0


def _interval(values: np.ndarray, counts: np.ndarray, samples: int, seed: int) -> tuple[float, float]:
    """Percentile interval of the mean of a variable taking ``values`` on ``counts`` images each."""
    n = int(counts.sum())
    if n == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=samples)
    means = draws @ values / n
    lo, hi = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return (float(lo), float(hi))


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                      seed: int = SEED) -> dict:
    """Top-1 of A minus top-1 of B on the same images, in points, with its 95% paired bootstrap interval and the
    exact McNemar p-value (two-sided binomial test on the images where exactly one of the two is right)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference: need two equal 1-D arrays, got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    counts = np.array([only_b, len(a) - only_a - only_b, only_a], np.float64)
    lo, hi = _interval(np.array([-1.0, 0.0, 1.0]), counts, samples, seed)
    diff = (only_a - only_b) / len(a) if len(a) else math.nan
    return {"difference": 100 * diff, "interval": (100 * lo, 100 * hi), "only_a": only_a, "only_b": only_b,
            "mcnemar_p": mcnemar_p(only_a, only_b), "images": len(a)}


def proportion_interval(hits: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED) -> tuple[float, float]:
    """95% bootstrap interval of a share (e.g. agreement with FP32), in percent."""
    h = np.asarray(hits, bool)
    k = int(h.sum())
    lo, hi = _interval(np.array([0.0, 1.0]), np.array([len(h) - k, k], np.float64), samples, seed)
    return (100 * lo, 100 * hi)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64 (0 for an all-zero row)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    den = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return (a * b).sum(-1) / den


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: under H0 the discordant images split Binomial(n, 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    # P(X <= k) for X ~ Bin(n, 1/2), summed in log space (n can be tens of thousands).
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                 for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2 * tail)
