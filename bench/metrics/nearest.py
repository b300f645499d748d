"""Exact nearest-neighbour search under SSIM, without scoring every pair in full.

`nearest_ssim(queries, refs)` gives each query max_j SSIM(query, refs[j]) and the lowest j that
attains it, equal to scoring every pair with `image.ssim` (float64); `exceeds` and
`nearest_quantile` answer "is the max above t" and "which quantile of the maxima" with less work.

The bound. Write SSIM's value in window p (Gaussian weights g, population moments) as

    s_p = l_p * c_p * rho_p,   l_p = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1),
    c_p = 2 t_x t_y / (t_x^2 + t_y^2),   rho_p = (cov_xy + C2/2) / (t_x t_y),   t^2 = var + C2/2,

which multiplies out to (2 mu mu + C1)(2 cov + C2) / ((mu^2 + mu^2 + C1)(var + var + C2)).
Images lie in [0, 1], so mu >= 0 and 0 < l_p <= 1; 0 < c_p <= 1 (AM-GM). rho_p is the inner
product of unit vectors xi = (w, k) / t, w = sqrt(g) * (patch - mu) (121 values), k = sqrt(C2/2):
|xi|^2 = (var + C2/2) / t^2 = 1 and <xi_x, xi_y> = (cov + C2/2) / (t_x t_y).
(1) l_p c_p is in (0, 1], so s_p <= max(rho_p, 0).
(2) For orthonormal V (121 x r) with u = V^T w / t and e^2 = |w / t|^2 - |u|^2 = var / t^2 - |u|^2,
    Cauchy-Schwarz on the parts of w outside V's span gives rho_p <= a a' + e e' + <u, u'>
    with a = k / t.
(3) a a' + e e' >= 0 and max(<u, u'>, 0) <= sum_i max(u_i u'_i, 0) = <u+, u'+> + <u-, u'->.
So s_p <= <phi_x(p), phi_y(p)> for phi = (a, e, u+, u-), a unit (2r + 2)-vector per window of
one image, and SSIM(x, y) <= (1/P) sum_p <phi_x(p), phi_y(p)>: one matrix product for all pairs.
V holds the window vectors a_i (x) a_j, 1 <= i + j <= degree (`hermite_taps`): separable, so each
projection is two band-matrix filters, and orthogonal to sqrt(g), so it needs no mean term. Any V
gives a valid bound; more directions give a tighter, dearer one. The bound is kept per strip of
window rows, so that a pair being scored is dropped after any strip once its exact strips so far
plus the bounds of the others cannot reach what it must beat (middle strips first).

Arithmetic. Features are float64, their products float32: each feature vector has norm <= 1, so
a strip's product is off by less than gamma_{n+2} (n its length, any summation order) times its
windows, which is added to it; FEATURE_SLACK covers float64 error in e near 0. Pairs are scored in
float32 like `image.ssim_matrix` (band-matrix filters of x*y + (C1+C2)/2, float64-rounded means
and variances), with a bound on the rounding error: in the standard model a band filter sums at
most 13 non-zero non-negative terms a pass, so filtered values are within gamma_30 (relative),
and the formula makes that an error below 1.9e-5 (2 + E[x^2]/t_x^2 + E[y^2]/t_y^2) per window
(E[x^2]/t^2 measures the cancellation in cov = E[xy] - mu_x mu_y); ROUNDING charges twice that.
A query's best is tracked as score - error; every pair whose score + error can still reach it
is scored again by `image.ssim` in float64 at the end, whose maximum is what is returned.
`tests/test_metrics_nearest.py` checks the bound and the error bound on random and adversarial
pairs (flat, bright, noisy, near-duplicate) and the search against scoring every pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from bench.metrics.image import C1, C2, WIN, _band, _Filter, check_images, gaussian_taps, ssim

BOUND_DEGREE = 2  # window directions a_i (x) a_j, 1 <= i + j <= this, in the bound; speed only
N_STRIPS = 8  # at most this many strips of window rows (a pair is dropped after any of them)
STRIP_ROWS = 16  # at least this many window rows a strip (each costs 10 more image rows to filter)
COL_TILE = 32  # output columns per band matmul of the column pass (fewer multiplies by zero)
FEATURE_SLACK = 1e-5  # per window: float64 error of e = sqrt(var/t^2 - |u|^2) near 0 (~sqrt(1e-11))
TOL = 1e-9  # float64 noise in comparisons of bounds and scores
ROUNDING = 4e-5  # per window and unit error weight: bound on float32 SSIM error (module doc)
CHUNK_BYTES = 4 * 2**20  # pairs scored together: about this much float32 image rows per tensor
PREP_CHUNK = 32  # images described together (memory: (chunk, h, w, features) float64)
MAX_TAKE = 64  # candidates per query per wave; waves take 1, 2, 4, ... up to this


@dataclass(frozen=True)
class Nearest:
    values: Tensor  # (N,) float64 best SSIM per query (-inf where below `floor`)
    index: Tensor  # (N,) int64 lowest reference index attaining it (-1 where below `floor`)
    exact_pairs: float  # pairs scored exactly, counting a pair dropped after k strips as k/strips
    rescored: int  # pairs scored again by `image.ssim` (float64) because they may be the best


def strip_rows(h: int) -> list[tuple[int, int]]:
    """Window-row ranges [a, b) cutting h rows into near-equal strips of >= STRIP_ROWS rows
    (fewer if h is small), at most N_STRIPS of them."""
    n = max(1, min(N_STRIPS, h // STRIP_ROWS))
    cuts = [round(i * h / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:])]


def window_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """(N, H, W) float64 -> local mean and population variance maps (N, H-10, W-10)."""
    filt = _Filter(x)
    mu = filt(x)
    return mu, filt(x * x) - mu * mu


def hermite_taps(degree: int) -> Tensor:
    """(degree + 1, WIN) float64: a_i * sqrt(g1), where a_0..a_degree are orthonormal in R^WIN
    with a_0 = sqrt(g1) (g1 the 1-D Gaussian taps) and a_i spanning sqrt(g1) * m^i, m = -5..5.
    The window vectors a_i (x) a_j are orthonormal in R^121; for i + j >= 1 they are orthogonal
    to sqrt(g), so they see only the centred patch w, and their filters need no mean term."""
    root = gaussian_taps().sqrt()
    m = torch.arange(WIN, dtype=torch.float64) - WIN // 2
    q, r = torch.linalg.qr(torch.stack([root * m**i for i in range(degree + 1)], 1))
    return (q * r.diagonal().sign()).T * root  # signs: a_0 = +sqrt(g1)


def _orders(degree: int) -> list[tuple[int, int]]:
    return [(i, n - i) for n in range(1, degree + 1) for i in range(n, -1, -1)]


def bound_features(x: Tensor, var: Tensor, degree: int = BOUND_DEGREE) -> Tensor:
    """(N, H, W) float64 images and their window variances -> (N, h, w, 2r + 2) float32 unit
    vectors phi = (a, e, u+, u-) per window, u the projections on a_i (x) a_j for
    1 <= i + j <= degree (r of them; see the module doc), computed in float64."""
    t2 = var.clamp_min(0).add_(C2 / 2)  # t^2
    taps = hermite_taps(degree)
    H, W = x.shape[-2:]
    cols = [x @ _band(W, torch.float64, x.device, taps[j]).T for j in range(degree + 1)]
    rows = [_band(H, torch.float64, x.device, taps[i]) for i in range(degree + 1)]
    inv_t = t2.rsqrt()
    orders = _orders(degree)
    out = torch.empty(*var.shape, 2 * len(orders) + 2)
    e2 = 1 - (C2 / 2) / t2  # var / t^2
    for k, (i, j) in enumerate(orders):
        u = (rows[i] @ cols[j]).mul_(inv_t)
        e2.sub_(u * u)
        out[..., 2 + k] = u.clamp_min(0)
        out[..., 2 + len(orders) + k] = u.neg_().clamp_min_(0)
    out[..., 0] = inv_t.mul_((C2 / 2) ** 0.5)
    out[..., 1] = e2.clamp_min_(0).sqrt_()
    return out


class _Pairs:
    """Queries against references: strip bounds of every pair, and SSIM of chosen pairs strip
    by strip in float32 (`image._mean_ssim`'s formula) with a bound on its rounding error."""

    def __init__(self, queries: Tensor, refs: Tensor, degree: int) -> None:
        self.xq, self.xr = queries[:, 0].float(), refs[:, 0].float()
        H, W = self.xq.shape[-2:]
        self.h, self.w = H - WIN + 1, W - WIN + 1
        self.strips = strip_rows(self.h)
        mid = (len(self.strips) - 1) / 2  # middle strips first: where brains differ most
        self.strip_order = sorted(range(len(self.strips)), key=lambda s: abs(s - mid))
        self.q, q_feats = self._describe(self.xq, degree, keep_features=True)
        q_parts = [torch.cat([f[:, a:b].flatten(1) for f in q_feats]) for a, b in self.strips]
        del q_feats
        self.bounds = torch.empty(len(self.strips), len(queries), len(refs))

        def bound(j: int, fr: Tensor) -> None:
            for s, (a, b) in enumerate(self.strips):
                self.bounds[s, :, j:j + len(fr)] = q_parts[s] @ fr[:, a:b].flatten(1).T

        self.r, _ = self._describe(self.xr, degree, on_features=bound)
        for s, (a, b) in enumerate(self.strips):
            n = q_parts[s].shape[1]
            slack = (n + 2) * 2.0**-24 / (1 - (n + 2) * 2.0**-24) * 1.01 + FEATURE_SLACK
            self.bounds[s] = (self.bounds[s] + slack * (b - a) * self.w) / (self.h * self.w)
        self.rows = _band(H, torch.float32, self.xq.device)  # (h, H)
        cols = _band(W, torch.float32, self.xq.device).T  # (W, w)
        self.tiles = [(j, min(j + COL_TILE, self.w)) for j in range(0, self.w, COL_TILE)]
        self.bands = [cols[j0:j1 + WIN - 1, j0:j1].contiguous() for j0, j1 in self.tiles]

    def _describe(self, x: Tensor, degree: int, *, keep_features: bool = False,
                  on_features: Callable[[int, Tensor], None] | None = None):
        """Window maps of images x (N, H, W), PREP_CHUNK at a time from float64 moments: mean and
        (var + C2/2)/2 in float32, and per strip the error weights sum(1 + E[x^2] / t^2);
        plus the bound features, kept or handed to `on_features(first index, features)`."""
        mu = torch.empty(len(x), self.h, self.w)
        v = torch.empty(len(x), self.h, self.w)
        weight = torch.empty(len(x), len(self.strips), dtype=torch.float64)
        kept = []
        for j in range(0, len(x), PREP_CHUNK):
            xd = x[j:j + PREP_CHUNK].double()
            m, var = window_moments(xd)
            mu[j:j + PREP_CHUNK], v[j:j + PREP_CHUNK] = m, (var + C2 / 2) / 2
            a2 = (var.clamp_min(0) + m * m) / (var.clamp_min(0) + C2 / 2)
            weight[j:j + PREP_CHUNK] = torch.stack([(1 + a2[:, a:b]).sum((1, 2))
                                                    for a, b in self.strips], 1)
            features = bound_features(xd, var, degree)
            if keep_features:
                kept.append(features)
            if on_features is not None:
                on_features(j, features)
        return (mu, v, weight), kept

    def _filter(self, z: Tensor, s: int) -> Tensor:
        """(n, rows a..b+10 of strip s = [a, b), W) -> (n, b - a, w): its window means."""
        a, b = self.strips[s]
        out = z.new_empty(len(z), z.shape[1], self.w)
        for (j0, j1), band in zip(self.tiles, self.bands):
            out[..., j0:j1] = z[..., j0:j1 + WIN - 1] @ band
        return self.rows[a:b, a:b + WIN - 1] @ out

    def score(self, qi: Tensor, rj: Tensor, target: Tensor) -> tuple[Tensor, Tensor, float]:
        """SSIM of pairs (qi, rj) and a bound on its error (float64 each; -inf for pairs dropped
        because their strips so far plus the bounds of the others fell below target - TOL), and
        the strips scored, counted in pairs."""
        values = torch.full((len(qi),), float("-inf"), dtype=torch.float64)
        errors, work = torch.zeros(len(qi), dtype=torch.float64), 0.0
        order = torch.argsort(qi, stable=True)  # pairs of a query together
        rows = max(b - a for a, b in self.strips) + WIN - 1
        chunk = max(1, CHUNK_BYTES // (4 * rows * self.xq.shape[-1]))
        for c in range(0, len(order), chunk):
            idx = order[c:c + chunk]
            values[idx], errors[idx], w = self._score_chunk(qi[idx], rj[idx], target[idx])
            work += w
        return values, errors, work

    def _score_chunk(self, qi: Tensor, rj: Tensor, target: Tensor) -> tuple[Tensor, Tensor, float]:
        order, P = self.strip_order, self.h * self.w
        rest = self.bounds[:, qi, rj][order].double().flip(0).cumsum(0).flip(0)  # strips k.. on
        rest = torch.cat([rest[1:], rest.new_zeros(1, len(qi))])  # strips after the k-th
        partial, error = torch.zeros(len(qi), dtype=torch.float64), torch.zeros(len(qi), dtype=torch.float64)
        alive, work = torch.arange(len(qi)), 0.0
        (q_mu, q_v, q_weight), (r_mu, r_v, r_weight) = self.q, self.r
        for k, s in enumerate(order):
            a, b = self.strips[s]
            q, r = qi[alive], rj[alive]
            cross = self._filter(torch.addcmul(torch.tensor((C1 + C2) / 2), self.xq[q, a:b + WIN - 1],
                                               self.xr[r, a:b + WIN - 1]), s)
            partial[alive] += _ssim_sum(cross, q_mu[q, a:b], q_v[q, a:b], r_mu[r, a:b], r_v[r, a:b]) / P
            error[alive] += ROUNDING * (q_weight[q, s] + r_weight[r, s]) / P
            work += len(alive) / len(self.strips)
            alive = alive[partial[alive] + error[alive] + rest[k, alive] >= target[alive] - TOL]
            if not len(alive):
                break
        values = torch.full((len(qi),), float("-inf"), dtype=torch.float64)
        values[alive] = partial[alive]
        return values, error, work


def _ssim_sum(cross: Tensor, mu_x: Tensor, v_x: Tensor, mu_y: Tensor, v_y: Tensor) -> Tensor:
    """(n,) float64 sum over windows of SSIM from E[xy] + (C1 + C2)/2 (`cross`, consumed),
    the means and v = (var + C2/2)/2 of both sides; the arithmetic of `image._mean_ssim`."""
    m = torch.addcmul(torch.tensor(C1 / 2, dtype=cross.dtype), mu_x, mu_y)
    num = cross.sub_(m).mul_(m)  # (mu mu + C1/2)(cov + C2/2)
    den = torch.addcmul(mu_y * mu_y + C1, mu_x, mu_x).mul_(v_x + v_y).div_(2)
    return num.div_(den).flatten(1).sum(1, dtype=torch.float64)


def strip_bounds(queries: Tensor, refs: Tensor, *, degree: int = BOUND_DEGREE) -> Tensor:
    """(S, Nq, Nr) float32: an upper bound on each strip's share of SSIM(query, ref), rounding
    slack included; summed over strips it bounds SSIM itself."""
    _check(queries, refs)
    return _Pairs(queries, refs, degree).bounds


# --- the search -------------------------------------------------------------------------------


def _check(queries: Tensor, refs: Tensor) -> None:
    check_images(queries, "queries")
    check_images(refs, "refs")
    if queries.shape[1:] != refs.shape[1:]:
        raise ValueError(f"queries and refs must have the same image shape, got "
                         f"{tuple(queries.shape[1:])} and {tuple(refs.shape[1:])}")
    if len(queries) == 0 or len(refs) == 0:
        raise ValueError(f"queries and refs must be non-empty, got {len(queries)}, {len(refs)}")


def _search(queries: Tensor, refs: Tensor, floor: Callable[[Tensor], Tensor], *,
            stop_above: bool, degree: int) -> Nearest:
    """Best exact SSIM per query among refs, scoring candidates in order of their bound, wave
    by wave, until no candidate's bound reaches max(best so far, floor(best)) - TOL; with
    `stop_above`, a query also stops once a score is above its floor (then it is not its max).
    Runs on the CPU whatever the inputs' device (its buffers and band filters are CPU-tuned);
    the results are CPU tensors."""
    queries, refs = queries.cpu(), refs.cpu()
    pairs = _Pairs(queries, refs, degree)
    total = pairs.bounds.sum(0)  # (Nq, Nr)
    order = total.argsort(1, descending=True)
    n_q = len(queries)
    best = torch.full((n_q,), float("-inf"), dtype=torch.float64)  # lower bounds of the max
    found: list[tuple[Tensor, Tensor, Tensor]] = []  # scored (query, ref, upper bound of SSIM)
    done = torch.zeros(n_q, dtype=torch.bool)
    pos, take, work = 0, 1, 0.0
    while pos < len(refs) and not done.all():
        lower = floor(best)
        target = torch.maximum(best, lower)
        cand = order[:, pos:pos + take]  # (Nq, k), bounds descending along k
        keep = (total.gather(1, cand).double() >= (target - TOL)[:, None]) & ~done[:, None]
        done |= ~keep[:, 0]
        qi, k = keep.nonzero(as_tuple=True)
        rj = cand[qi, k]
        values, errors, w = pairs.score(qi, rj, target[qi])
        work += w
        found.append((qi, rj, values + errors))
        best = torch.maximum(best, torch.full_like(best, float("-inf")).scatter_reduce(
            0, qi, values - errors, "amax"))
        if stop_above:
            done |= best > lower + TOL
        pos, take = pos + take, min(2 * take, MAX_TAKE)
    return _settle(queries, refs, found, best, floor(best), work)


def _settle(queries: Tensor, refs: Tensor, found: list[tuple[Tensor, Tensor, Tensor]],
            best: Tensor, lower: Tensor, work: float) -> Nearest:
    """Rescore with `image.ssim` every scored pair that may reach its query's best (and its
    floor): the returned value is that function's maximum, ties to the lowest index."""
    qi, rj, upper = (torch.cat(t) for t in zip(*found))
    near = (upper >= best[qi] - TOL) & (upper >= lower[qi] - TOL)
    qi, rj = qi[near], rj[near]
    exact = ssim(queries[qi], refs[rj]) if len(qi) else torch.zeros(0, dtype=torch.float64)
    values = torch.full((len(queries),), float("-inf"), dtype=torch.float64)
    values.scatter_reduce_(0, qi, exact, "amax")
    index = torch.full((len(queries),), len(refs), dtype=torch.long)
    top = exact == values[qi]
    index.scatter_reduce_(0, qi[top], rj[top], "amin")
    index[index == len(refs)] = -1
    return Nearest(values, index, work, len(qi))


def nearest_ssim(queries: Tensor, refs: Tensor, *, floor: float | None = None,
                 degree: int = BOUND_DEGREE) -> Nearest:
    """For each query (N, 1, H, W), max_j SSIM(query, refs[j]) and the lowest j attaining it:
    equal to scoring every pair with `image.ssim`. With `floor`, a query whose max is below it
    gets -inf and index -1 (the search does less work)."""
    _check(queries, refs)
    below = float("-inf") if floor is None else float(floor)
    result = _search(queries, refs, lambda best: torch.full_like(best, below),
                     stop_above=False, degree=degree)
    if floor is not None:
        low = result.values < below
        result.values[low], result.index[low] = float("-inf"), -1
    return result


def exceeds(queries: Tensor, refs: Tensor, threshold: float, *, degree: int = BOUND_DEGREE) -> Tensor:
    """(N,) bool: whether some reference has SSIM strictly above `threshold` with the query."""
    _check(queries, refs)
    result = _search(queries, refs, lambda best: torch.full_like(best, float(threshold)),
                     stop_above=True, degree=degree)
    return result.values > threshold


def nearest_quantile(queries: Tensor, refs: Tensor, quantile: float, *,
                     degree: int = BOUND_DEGREE) -> float:
    """torch.quantile (linear) of the queries' nearest-reference SSIMs, exactly, computing the
    exact nearest SSIM only for queries that can reach the order statistics it interpolates:
    the floor is the same order statistic of the best scores found so far (never above it)."""
    _check(queries, refs)
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    rank_lo = int(quantile * (len(queries) - 1))  # torch.quantile's lower order statistic

    def floor(best: Tensor) -> Tensor:
        return torch.full_like(best, float(best.kthvalue(rank_lo + 1).values) - TOL)

    result = _search(queries, refs, floor, stop_above=False, degree=degree)
    # queries left at -inf are below the order statistics interpolated: any stand-in < -1 will do
    return float(torch.quantile(result.values.clamp_min(-2.0), quantile))


__all__ = ["Nearest", "nearest_ssim", "exceeds", "nearest_quantile", "strip_bounds",
           "bound_features", "hermite_taps", "strip_rows"]
