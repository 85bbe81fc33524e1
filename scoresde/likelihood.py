"""Exact log-likelihoods through the probability-flow ODE (the instantaneous change of variables).

The PF-ODE ``dx/dt = F(x, t) = f(t) x - 1/2 g(t)^2 score(x, t) = f(t) x + g(t)^2 / (2 sigma(t)) eps(x, t)``
(Song et al. 2021, eq. 13) carries ``p_{t_min}`` to ``p_T``, and along a solution
``d log p_t(x_t) / dt = -div F(x_t, t)`` (Chen et al. 2018; Song et al. 2021, eq. 39-40 and appendix D.2), so

    log p_{t_min}(x) = log p_T(x_T) + int_{t_min}^T div F(x_t, t) dt,
    div F = d f(t) + g(t)^2 / (2 sigma(t)) div eps(x, t),

with ``x_{t_min} = x`` and ``d`` the number of data dimensions. The number returned is therefore the model's
log-density at ``t_min`` (not at 0), with ``log p_T`` replaced by the prior ``N(0, prior_std^2 I)`` unless
another ``prior_logp`` is given. ``div eps`` is either exact (one vector-Jacobian product per dimension) or
Hutchinson's unbiased estimate ``E[v^T (d eps/dx) v]`` with Rademacher or Gaussian probes ``v`` held fixed over
the whole integration (Hutchinson 1989; Grathwohl et al. 2019, FFJORD, eq. 7).

The ODE runs in ``t`` by default. ``time="logsnr"`` integrates in ``lambda = log(alpha^2 / sigma^2)`` instead:
``d lambda / dt = -g^2 / sigma^2``, so

    dx/dlambda = -(sigma^2 f / g^2) x - (sigma / 2) eps(x, t(lambda)),

whose ``eps`` coefficient vanishes as ``t -> 0`` instead of growing like ``1 / sigma`` (the divergence picks up
the same factor ``dt / dlambda``; the integral is unchanged). Integrating away from ``t_min`` dopri5 did not
struggle in ``t`` on the exact mixtures or on float32 networks, and needed 15-40% fewer model calls there than
in log-SNR time; the option is kept for scores that are rough near ``t_min``.

Discrete data (``bins`` equally spaced levels over ``data_range``, e.g. 8-bit pixels scaled to [-1, 1]) are
dequantised uniformly within the cell of width ``Delta`` centred on each level (Theis et al. 2016; Ho et al.
2020, section 3.3; Song et al. 2021, appendix D.2): ``y = x + Delta (u - 1/2)``, ``u ~ U[0, 1)^d``, and by
Jensen's inequality ``log P(x) >= E_u log p(y) + d log Delta``. The reported ``nats`` include ``d log Delta``
and are one draw of that bound, so ``bits_per_dim`` are those of the discrete data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchdiffeq
from torch import Tensor

from .checks import check_choice, check_int, check_number, check_one_source
from .noise import NoiseSource
from .param import Score
from .sde import SDE
from .solvers.base import NonFiniteError

__all__ = ["Likelihood", "log_likelihood", "TRACES", "PROBES", "ADAPTIVE_METHODS"]

TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
TIME_VARIABLES = ("t", "logsnr")
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
_DEQUANT_STREAM = 0  # NoiseSource stream of the dequantisation noise; probe j uses stream 1 + j


@dataclass
class Likelihood:
    """The result of :func:`log_likelihood`; per-sample tensors have shape ``(batch,)``, float64 on the CPU (whatever
    device the model ran on; ``x_T`` stays on it).

    Attributes:
        nats: ``log p(x)`` in nats: ``prior_logp + delta_logp + log_bin_volume``. Without dequantisation this
            is the log-density ``log p_{t_min}(x)``; with it, one draw of the lower bound on the log-probability
            of the discrete data. The negative log-likelihood is ``-nats``.
        bits_per_dim: ``-nats / (d log 2)``, the negative log-likelihood in bits per dimension.
        std_err: the Hutchinson standard error of ``nats`` (sample std over the probes / sqrt(n_probes));
            NaN with one probe (not estimable), 0 for the exact trace (only the integration error remains).
        prior_logp: ``log p_T(x_T)`` under the prior.
        delta_logp: ``int_{t_min}^T div F(x_t, t) dt``, the change-of-variables term.
        log_bin_volume: ``d log Delta`` (0 without dequantisation), a float.
        x_T: the state at ``T`` (the latent code), of ``x``'s shape.
        nfe: model calls, counted by the score (the vector-Jacobian products reuse each call's graph).
        vjps: vector-Jacobian products computed (per batch): ``d`` (exact) or ``n_probes`` per model call.
        dim: ``d``, the number of dimensions per sample.
        t_min, T: the integration interval.
        trace, n_probes: how the divergence was computed.
    """

    nats: Tensor
    bits_per_dim: Tensor
    std_err: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    log_bin_volume: float
    x_T: Tensor
    nfe: int
    vjps: int
    dim: int
    t_min: float
    T: float
    trace: str
    n_probes: int

    @property
    def bits_per_dim_std_err(self) -> Tensor:
        """The standard error of ``bits_per_dim``: ``std_err / (d log 2)``."""
        return self.std_err / (self.dim * math.log(2))


def _dequantise(x: Tensor, bins: int, data_range, noise: NoiseSource) -> tuple[Tensor, float]:
    """``y = x + Delta (u - 1/2)`` with ``Delta = (hi - lo) / (bins - 1)``; returns ``(y, log Delta)``."""
    check_int("", "bins", bins, ge=2, hint="the number of discrete levels")
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (low, high), got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"data_range must be finite with low < high, got {data_range!r}")
    delta = (hi - lo) / (bins - 1)
    wide = _wide_dtype(x)
    level = (x.to(wide) - lo) / delta
    off_grid = (level - level.round()).abs().max()
    if float(off_grid) > 1e-3 or float(level.min()) < -1e-3 or float(level.max()) > bins - 1 + 1e-3:
        raise ValueError(
            f"dequantisation expects x on the {bins} levels lo + k (hi - lo) / {bins - 1} of data_range={data_range}; "
            f"x lies in [{float(x.min()):g}, {float(x.max()):g}] and is up to {float(off_grid):.3g} levels off the grid"
        )
    # u = Phi(z) is uniform on (0, 1) for z standard normal; the normals come per sample from ``noise``.
    u = torch.special.ndtr(noise.randn(x.shape, stream=_DEQUANT_STREAM, dtype=wide, device=x.device))
    return (x.to(wide) + delta * (u - 0.5)).to(x.dtype), math.log(delta)


def _wide_dtype(x: Tensor) -> torch.dtype:
    """float64 for arithmetic on CPU tensors; on a device the state's own dtype (Apple MPS has no float64)."""
    return torch.float64 if x.device.type == "cpu" else x.dtype


def _host64(t: Tensor) -> Tensor:
    """A per-sample result as a float64 CPU tensor (float64 stays on the host; one copy at the end of a run)."""
    return t.detach().cpu().double()


class _Divergence:
    """``div eps`` of a model output with respect to its input, by vector-Jacobian products (reverse mode).

    ``exact``: the cotangents are the basis vectors ``e_i``, the same for every sample: samples do not interact,
    so one VJP with ``e_i`` in every row gives row ``i`` of every sample's Jacobian, and ``d`` of them give the
    trace. ``hutchinson``: the fixed probes ``v_j``, one estimate ``v_j^T J v_j`` per probe. The VJPs run one
    after another on the retained graph: batching them with ``is_grads_batched`` (vmap over the backward pass)
    was up to 2x slower on the mixtures' exact scores and no faster on MLPs (d = 2 to 64, batch 200, CPU).
    """

    def __init__(self, probes: Tensor | None, dim: int):
        self.probes, self.dim = probes, dim  # probes: (P, B, d) or None for the exact trace
        self.vjps = 0

    def _vjp(self, out: Tensor, x: Tensor, cot: Tensor) -> Tensor:
        """``J^T v`` per sample for one cotangent ``v`` of shape ``(B, d)``; returns ``(B, d)``."""
        self.vjps += 1
        (g,) = torch.autograd.grad(out, x, cot.reshape(out.shape), retain_graph=True, materialize_grads=True)
        return g.reshape(x.shape[0], -1)

    def __call__(self, out: Tensor, x: Tensor) -> Tensor:
        """``(B, P)`` divergence estimates (``P = 1`` for the exact trace)."""
        B, d = x.shape[0], self.dim
        if not out.requires_grad:  # the output does not depend on x (e.g. a constant model): div = 0
            return torch.zeros(B, 1 if self.probes is None else len(self.probes), dtype=out.dtype, device=out.device)
        if self.probes is not None:
            return torch.stack([(self._vjp(out, x, v) * v).sum(-1) for v in self.probes], 1)
        eye = torch.eye(d, dtype=out.dtype, device=out.device)
        total = torch.zeros(B, dtype=out.dtype, device=out.device)
        for i in range(d):
            total = total + self._vjp(out, x, eye[i].expand(B, d))[:, i]
        return total[:, None]


def _progress_bar(batch: int, t_min: float, T: float):
    """A tqdm bar on stderr over the share of the integration from ``t_min`` to ``T`` done."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        total=1.0,
        desc=f"log-likelihood of {batch} points, t from {t_min:g} to {T:g}",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
        file=sys.stderr,
    )


def _per_sample_max_rms(err: Tensor) -> Tensor:
    """Error norm for the step-size control: the worst sample's RMS over its own state (x and log p)."""
    return err.pow(2).mean(1).sqrt().max()


def log_likelihood(
    score: Score,
    sde: SDE | None,
    x: Tensor,
    *,
    t_min: float | None = None,
    T: float | None = None,
    trace: str = "exact",
    probe: str = "rademacher",
    n_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    time: str = "t",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    sample_offset: int = 0,
    bins: int | None = None,
    data_range: tuple[float, float] = (-1.0, 1.0),
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    max_steps: int = 10_000,
    progress: bool = False,
) -> Likelihood:
    """``log p_{t_min}(x)`` per sample by integrating the PF-ODE with its log-density from ``t_min`` to ``T``.

    ``log p_{t_min}(x) = log p_T(x_T) + int_{t_min}^T [d f(t) + g(t)^2 / (2 sigma(t)) div eps(x_t, t)] dt``
    (Song et al. 2021, eq. 39-40; see the module docstring), solved by torchdiffeq's adaptive ``method`` with
    ``rtol``/``atol`` on the joint state ``(x, delta_logp)``. Step sizes are controlled by the worst sample's
    error, so every sample meets the tolerance whatever the batch; results of different batch layouts agree to
    within that tolerance.

    Args:
        score: a :class:`~scoresde.param.Score`; its model must treat samples independently (no batch norm).
        sde: the SDE (defaults to ``score.sde``; must describe the same process).
        x: data, ``(batch, *dims)`` (points or images), floating point. Use float64 for exact problems.
        t_min, T: integration interval (defaults ``sde.t_min`` and ``sde.T``); the result is ``log p_{t_min}``.
        trace: ``"exact"`` (``d`` VJPs per model call; for small ``d``) or ``"hutchinson"``.
        probe, n_probes: Hutchinson's probe distribution (``"rademacher"`` or ``"gaussian"``) and count; probe
            ``j`` of sample ``i`` depends only on (seed, ``sample_offset + i``, ``j``).
        rtol, atol, method, max_steps: torchdiffeq's adaptive solver and its tolerances.
        progress: show a bar on stderr of the share of the integration done, with the time reached and the model
            calls so far (a likelihood of a few thousand points takes minutes on a CPU).
        time: the integration variable, ``"t"`` (default) or ``"logsnr"`` (see the module docstring).
        generator, seed: randomness for the probes and the dequantisation (one of them, or neither for the global
            RNG; no draw is made when nothing is random). ``sample_offset``: global index of sample 0.
        bins, data_range: discrete data taking ``bins`` equally spaced levels from ``data_range[0]`` to
            ``data_range[1]`` inclusive are dequantised uniformly in cells of width
            ``Delta = (high - low) / (bins - 1)`` and ``d log Delta`` is added (``bins=None``: continuous data).
        prior_logp: ``log p_T`` as a function of ``x_T`` returning ``(batch,)`` (default ``sde.prior_logp``).

    Returns:
        :class:`Likelihood` with per-sample ``nats`` (log-likelihood), ``bits_per_dim``, ``std_err``, the prior
        and integral terms, ``x_T`` and the counted ``nfe``.
    """
    sde, t_min, T = _checked(
        score, sde, x, trace, probe, method, time, n_probes, rtol, atol, max_steps, generator, seed, t_min, T
    )
    prior_logp = sde.prior_logp if prior_logp is None else prior_logp
    B, shape, d = x.shape[0], x.shape, x[0].numel()
    noise = None
    if trace == "hutchinson" or bins is not None:
        noise = (
            NoiseSource(seed, sample_offset)
            if seed is not None
            else NoiseSource.from_generator(generator, sample_offset)
        )
    log_volume = 0.0
    if bins is not None:
        x, log_delta = _dequantise(x, bins, data_range, noise)
        log_volume = d * log_delta
    probes = None
    if trace == "hutchinson":
        z = torch.stack([noise.randn((B, d), stream=1 + j, dtype=x.dtype, device=x.device) for j in range(n_probes)])
        probes = z.sign() if probe == "rademacher" else z
    div = _Divergence(probes, d)
    u0, u1, to_t = _time_variable(sde, time, t_min, T)
    nfe0 = score.nfe
    bar = _progress_bar(B, t_min, T) if progress else None
    rhs = _augmented_rhs(score, sde, div, to_t, shape, (u0, u1), bar)
    state0 = torch.cat([x.reshape(B, d), torch.zeros(B, n_probes, dtype=x.dtype, device=x.device)], 1)
    try:
        out = _integrate(rhs, state0, u0, u1, method, rtol, atol, max_steps, lambda: score.nfe - nfe0)
    finally:
        if bar is not None:
            bar.close()
    x_T = out[:, :d].reshape(shape)
    per_probe = _host64(out[:, d:])  # (B, P): int div F dt for each probe
    prior = _host64(torch.as_tensor(prior_logp(x_T)))
    if prior.shape != (B,):
        raise ValueError(f"prior_logp must return shape (batch,) = ({B},), got {tuple(prior.shape)}")
    delta = per_probe.mean(1)
    nats = prior + delta + log_volume
    return Likelihood(
        nats=nats,
        bits_per_dim=-nats / (d * math.log(2)),
        std_err=_std_err(per_probe, trace),
        prior_logp=prior,
        delta_logp=delta,
        log_bin_volume=log_volume,
        x_T=x_T,
        nfe=score.nfe - nfe0,
        vjps=div.vjps,
        dim=d,
        t_min=t_min,
        T=T,
        trace=trace,
        n_probes=n_probes,
    )


def _checked(score, sde, x, trace, probe, method, time, n_probes, rtol, atol, max_steps, generator, seed, t_min, T):
    """The arguments of :func:`log_likelihood` checked; returns the score's SDE and the interval ``(t_min, T)``."""
    if not isinstance(score, Score):
        raise TypeError(f"score must be a scoresde Score (e.g. EpsilonScore(model, sde)), got {type(score).__name__}")
    sde = score.sde if sde is None else sde
    if repr(sde) != repr(score.sde):
        raise ValueError(f"the score was built for {score.sde!r} but the likelihood was asked for {sde!r}")
    sde = score.sde
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point tensor of shape (batch, *dims) with batch >= 1; got {got}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains non-finite values")
    check_choice("", "trace", trace, TRACES)
    check_choice("", "probe", probe, PROBES)
    check_choice("", "method", method, ADAPTIVE_METHODS)
    check_choice("", "time", time, TIME_VARIABLES)
    check_int("", "n_probes", n_probes, ge=1)
    if trace == "exact" and n_probes != 1:
        raise ValueError("n_probes applies to trace='hutchinson' only")
    check_number("", "rtol", rtol, gt=0)
    check_number("", "atol", atol, gt=0)
    check_int("", "max_steps", max_steps, ge=1)
    check_one_source(generator, seed)
    t_min = float(sde.t_min if t_min is None else t_min)
    T = float(sde.T if T is None else T)
    if not (0 < t_min < T <= sde.T):
        raise ValueError(f"need 0 < t_min < T <= sde.T = {sde.T:g}; got t_min={t_min:g}, T={T:g}")
    return sde, t_min, T


def _time_variable(sde, time: str, t_min: float, T: float):
    """``(u0, u1, to_t)``: the integration variable's ends and ``u -> (t, dt/du)`` (``t`` itself, or the log-SNR)."""
    if time == "logsnr":
        u0, u1 = float(sde.log_snr(t_min)), float(sde.log_snr(T))

        def to_t(u: float) -> tuple[float, float]:
            t = t_min if u == u0 else T if u == u1 else float(sde.t_from_log_snr(u))
            c = sde.coefs(t)
            return t, -(c.sigma * c.sigma) / c.g2  # dt / dlambda = -sigma^2 / g^2

        return u0, u1, to_t
    return t_min, T, lambda u: (u, 1.0)


def _augmented_rhs(score, sde, div, to_t, shape, span: tuple[float, float], bar):
    """The right-hand side of the joint ODE of ``(x, delta_logp)`` in the variable ``u``: the PF-ODE drift and the
    divergence of it (``div F = d f + g^2 / (2 sigma) div eps``), times ``dt/du``; it moves ``bar`` if given."""
    B, d = shape[0], math.prod(shape[1:])
    u0, u1 = span
    nfe0 = score.nfe

    def rhs(u: Tensor, state: Tensor) -> Tensor:
        t, dt_du = to_t(float(u))
        if bar is not None:  # the share of [u0, u1] covered so far (stages may look back; the bar only moves on)
            done = round((float(u) - u0) / (u1 - u0), 3)
            if done > bar.n:
                bar.update(done - bar.n)
            bar.set_postfix_str(f"t = {t:.3g}, {score.nfe - nfe0 + 1} model calls", refresh=False)
        c = sde.coefs(t)
        xt = state[:, :d].reshape(shape)
        with torch.enable_grad():
            xg = xt.detach().requires_grad_(True)
            eps = score.eps(xg, t, c)
            if not torch.isfinite(eps).all():
                raise NonFiniteError(f"log_likelihood: the model returned non-finite values at t = {t:.6g}")
            div_eps = div(eps, xg)  # (B, P)
        dx = c.pf_drift(xt, eps.detach()).reshape(B, d)
        ddelta = c.pf_drift(d, div_eps.detach())  # div F = d f + g^2 / (2 sigma) div eps
        return torch.cat([dx, ddelta], 1) * dt_du

    return rhs


def _integrate(rhs, state0: Tensor, u0: float, u1: float, method, rtol, atol, max_steps, calls) -> Tensor:
    """torchdiffeq's adaptive ``method`` from ``u0`` to ``u1``, the error measured per sample, landing on ``u1``;
    a failure (step-size underflow, ``max_steps``) is a :class:`NonFiniteError` naming ``calls()`` model calls."""
    ts = torch.tensor([u0, u1], dtype=_wide_dtype(state0), device=state0.device)
    options = {
        "norm": _per_sample_max_rms,
        "step_t": ts[1:],  # land on T exactly: never evaluate the score beyond it
        "first_step": 1e-2 * abs(u1 - u0),  # skip the initial-step heuristic, which probes outside [t_min, T]
        "max_num_steps": int(max_steps),
    }
    if state0.device.type != "cpu":
        options["dtype"] = state0.dtype  # torchdiffeq keeps its times in float64 on x's device unless told
    try:
        with torch.no_grad():
            return torchdiffeq.odeint(rhs, state0, ts, method=method, rtol=rtol, atol=atol, options=options)[-1]
    except AssertionError as e:  # torchdiffeq reports step-size underflow and max_num_steps with assert
        raise NonFiniteError(f"log_likelihood: torchdiffeq failed ({e}) after {calls()} model calls") from e


def _std_err(per_probe: Tensor, trace: str) -> Tensor:
    """The standard error of the trace estimate per sample: 0 for the exact trace, nan for one probe."""
    B, P = per_probe.shape
    if trace == "exact":
        return torch.zeros(B, dtype=torch.float64)
    if P == 1:
        return torch.full((B,), math.nan, dtype=torch.float64)
    return per_probe.std(1) / math.sqrt(P)
