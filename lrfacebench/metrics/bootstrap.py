"""Paired bootstrap over test faces: how far a metric, and a difference between two methods, could
have moved had other faces of the same kind been tested.

One weight matrix ``W`` ``(R,N)`` (multinomial counts, each row sums to N) is drawn per test set
and shared by every method evaluated on it, so two methods' replicates are *paired*: replicate r
of method A and of method B see the same resampled faces. The difference A - B then has the
percentile interval of its R replicate differences (Efron & Tibshirani 1993, ch. 13).

Replicates are computed from per-face quantities without redoing any image work:

- a per-face metric (PSNR, SSIM, identity cosine, LR error): the weighted mean ``W v / N``;
- FID of a set against a fixed reference: the Fréchet distance of the *weighted* feature
  Gaussian, from three N x N matrices computed once (see :func:`fid_replicates`), so 1,000
  replicates of N = 81 faces cost about a second on a CPU;
- KID: the unbiased MMD^2 of the whole weighted set against the whole reference (polynomial
  kernel of clean-fid), from the kernel matrices computed once.

The reference set stays fixed (it is the target distribution, not a sample of test faces).
Bootstrap FID is biased upwards (a resample has fewer distinct faces); the bias is nearly the
same for two methods on the same faces, so it largely cancels in the paired difference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def weights(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` float64 counts: how often each of ``n`` faces is drawn in each resample."""
    if n < 2:
        raise ValueError(f"the bootstrap needs at least 2 faces, got {n}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def mean_replicates(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(R,)`` weighted means of per-face ``values`` ``(N,)``."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (w.shape[1],):
        raise ValueError(f"{values.shape[0]} values for {w.shape[1]} bootstrap faces")
    return w @ values / w.shape[1]


def fid_replicates(feats: np.ndarray, ref_feats: np.ndarray, w: np.ndarray, chunk: int = 128) -> np.ndarray:
    """``(R,)`` FID of each weighted resample of ``feats`` ``(N,D)`` against ``ref_feats`` ``(M,D)``.

    With weights w (sum n) the resample's mean is ``F^T w / n`` and its covariance
    ``Y^T Y`` with ``Y = diag(sqrt(w)) (F - 1 mu^T) / sqrt(n-1)`` (``np.cov`` of the repeated
    rows). ``tr((S S_r)^(1/2))`` is the sum of square roots of the eigenvalues of the N x N
    ``Y S_r Y^T``, which is expressed through ``K = F S_r F^T``; the mean and trace terms through
    ``G = F F^T`` and ``F mu_r``. Each replicate equals :func:`lrfacebench.metrics.fid.frechet_distance`
    of the explicitly resampled features (tested).
    """
    f = np.asarray(feats, dtype=np.float64)
    r = np.asarray(ref_feats, dtype=np.float64)
    n = w.shape[1]
    if f.shape[0] != n:
        raise ValueError(f"{f.shape[0]} feature rows for {n} bootstrap faces")
    mu_r = r.mean(axis=0)
    s_r = np.cov(r, rowvar=False)
    g = f @ f.T
    k = (f @ s_r) @ f.T
    f_mu_r = f @ mu_r
    const = mu_r @ mu_r + np.trace(s_r)
    out = np.empty(len(w))
    for lo in range(0, len(w), chunk):
        wc = w[lo:lo + chunk]  # (C,N)
        gw = wc @ g  # (C,N)
        mean_sq = np.einsum("cn,cn->c", gw, wc) / n**2  # |mu|^2
        diff_sq = mean_sq - 2 * wc @ f_mu_r / n
        trace = (wc @ np.diag(g) - n * mean_sq) / (n - 1)
        kw = wc @ k / n  # (C,N): K w / n
        wkw = np.einsum("cn,cn->c", kw, wc) / n  # w^T K w / n^2
        m = k[None] - kw[:, :, None] - kw[:, None, :] + wkw[:, None, None]
        root = np.sqrt(wc)
        m = root[:, :, None] * m * root[:, None, :] / (n - 1)
        eig = np.linalg.eigvalsh((m + m.transpose(0, 2, 1)) / 2)
        out[lo:lo + chunk] = diff_sq + trace + const - 2 * np.sqrt(np.clip(eig, 0, None)).sum(axis=1)
    return out


def kid_replicates(feats: np.ndarray, ref_feats: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(R,)`` unbiased MMD^2 (kernel ``(x.y/D + 1)^3``, clean-fid's) of each weighted resample of
    ``feats`` ``(N,D)`` against the whole ``ref_feats`` ``(M,D)``; pairs of one face with itself
    (the diagonal) are left out, repeated draws of a face count as distinct faces."""
    f = np.asarray(feats, dtype=np.float64)
    r = np.asarray(ref_feats, dtype=np.float64)
    n, m, d = w.shape[1], len(r), f.shape[1]
    if f.shape[0] != n:
        raise ValueError(f"{f.shape[0]} feature rows for {n} bootstrap faces")
    k_ff = (f @ f.T / d + 1) ** 3
    k_rr = (r @ r.T / d + 1) ** 3
    k_fr_rows = ((f @ r.T / d + 1) ** 3).sum(axis=1)  # (N,)
    within_f = (np.einsum("cn,nm,cm->c", w, k_ff, w) - w @ np.diag(k_ff)) / (n * (n - 1))
    within_r = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
    return within_f + within_r - 2 * (w @ k_fr_rows) / (n * m)


@dataclass(frozen=True)
class Delta:
    """A - B on the same faces: the point difference and its paired percentile interval."""

    value: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired_delta(point_a: float, point_b: float, rep_a: np.ndarray, rep_b: np.ndarray,
                 level: float = LEVEL) -> Delta:
    """Difference ``point_a - point_b`` with the percentile interval of ``rep_a - rep_b``
    (replicates drawn with the same weights)."""
    rep_a, rep_b = np.asarray(rep_a, dtype=np.float64), np.asarray(rep_b, dtype=np.float64)
    if rep_a.shape != rep_b.shape:
        raise ValueError(f"unpaired replicates: {rep_a.shape} vs {rep_b.shape}")
    diff = rep_a - rep_b
    alpha = (1 - level) / 2
    low, high = np.quantile(diff, [alpha, 1 - alpha])
    return Delta(float(point_a - point_b), float(low), float(high), level)


def _wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n_a, n_b)``: 1 where a_i > b_j, 0.5 on ties, else 0."""
    return (a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])


def auc_replicates(scores_a: np.ndarray, scores_b: np.ndarray, w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
    """``(R,)`` AUC P(a > b) of each resample, set A drawn with weights ``w_a`` ``(R,n_a)`` and set B
    with ``w_b`` ``(R,n_b)``: the weighted mean of the pairwise wins."""
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    return np.einsum("ri,ij,rj->r", w_a, _wins(a, b), w_b) / (len(a) * len(b))


def auc_interval(scores_a: np.ndarray, scores_b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> tuple[float, float, float]:
    """``(auc, low, high)``: the probability that a score of set A exceeds one of set B (ties
    count half; the area under the ROC curve, Mann-Whitney U / (n_a n_b)) and its percentile
    interval, each set resampled on its own (the two sets are different faces, not paired).
    0.5: the scores do not tell the sets apart."""
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    reps = auc_replicates(a, b, weights(len(a), resamples, seed), weights(len(b), resamples, seed + 1))
    alpha = (1 - level) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return float(_wins(a, b).mean()), float(low), float(high)
