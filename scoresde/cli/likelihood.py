"""``scoresde likelihood``: log-likelihood and bits/dim through the probability-flow ODE, of an exact problem's
draws (with the errors against its exact log-density) or of a checkpoint's test split."""

from __future__ import annotations

import sys

from ..sde_names import SDES
from .args import device, positive, seed

NAME = "likelihood"
HELP = "log-likelihood and bits/dim through the probability-flow ODE"


def add_arguments(lk) -> None:
    lk.add_argument("--problem", help="an exact problem (ring, gmm16, gmm64): errors vs its exact log-density")
    lk.add_argument("--checkpoint", help="a trained checkpoint directory (its test split; digits are dequantised)")
    lk.add_argument("--sde", default="vp", choices=tuple(SDES), help="for --problem (default: %(default)s)")
    lk.add_argument("--n", type=positive, help="samples (default 200 for a problem, the whole test split otherwise)")
    lk.add_argument("--trace", default="exact", choices=("exact", "hutchinson"), help="default: %(default)s")
    lk.add_argument(
        "--probe",
        default="rademacher",
        choices=("rademacher", "gaussian"),
        help="Hutchinson probes (default: %(default)s)",
    )
    lk.add_argument("--probes", type=positive, default=1, help="Hutchinson probes per sample (default: %(default)s)")
    lk.add_argument("--rtol", type=float, default=1e-5)
    lk.add_argument("--atol", type=float, default=1e-5)
    lk.add_argument("--t-min", type=float, help="lower end of the integral (default: the SDE's t_min)")
    lk.add_argument("--method", default="dopri5", help="torchdiffeq adaptive method")
    lk.add_argument("--time", default="t", choices=("t", "logsnr"), help="integration variable (default: %(default)s)")
    lk.add_argument("--batch", type=positive, help="samples per batch (default all at once)")
    lk.add_argument("--seed", type=seed, default=0, help="data draw (problems), probes and dequantisation")
    lk.add_argument("--raw-weights", action="store_true", help="checkpoint: the raw weights instead of the EMA")
    lk.add_argument("--device", type=device, default="cpu", help="default: %(default)s")
    lk.add_argument("--no-progress", action="store_true", help="no progress bar (one per batch, on stderr)")


def _inputs(args):
    """``(gmm or None, score, sde, x, what, dequantisation kwargs)`` of ``--problem`` or ``--checkpoint``."""
    import torch

    from ..problems import get_problem
    from ..sde_names import make_sde

    if (args.problem is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --problem NAME and --checkpoint DIR")
    if args.problem is not None:
        if args.sde not in SDES:
            raise ValueError(f"--sde must be one of {', '.join(SDES)}, got {args.sde!r}")
        gmm, sde = get_problem(args.problem), make_sde(args.sde)
        x = gmm.sample(args.n or 200, generator=torch.Generator().manual_seed(args.seed))
        return gmm, gmm.score(sde), sde, x, args.problem, {}
    from .. import data as data_mod
    from ..train import load_score

    score, sde, cfg, _ = load_score(args.checkpoint, ema=not args.raw_weights, device=args.device)
    x, _ = data_mod.get_dataset(cfg.data, "test", n=args.n or 2000, seed=cfg.data_seed)
    x, what = x[: args.n].to(args.device), f"{args.checkpoint} on {cfg.data} (test split)"
    kw = {}
    if cfg.data == "digits":  # pixel counts 0..16 at k / 8 - 1: dequantise to bits/dim of the counts
        kw = {"bins": data_mod.DIGIT_LEVELS, "data_range": (-1.0, 1.0)}
    return None, score, sde, x, what, kw


def run(args) -> int:
    import time

    import torch

    from ..likelihood import log_likelihood

    try:
        gmm, score, sde, x, what, kw = _inputs(args)
        opts = dict(t_min=args.t_min, trace=args.trace, probe=args.probe, n_probes=args.probes, seed=args.seed)
        opts |= dict(rtol=args.rtol, atol=args.atol, method=args.method, time=args.time, **kw)
        opts["progress"] = not args.no_progress
        batch = args.batch or x.shape[0]
        start = time.perf_counter()
        parts = [log_likelihood(score, sde, x[i : i + batch], sample_offset=i, **opts) for i in range(0, len(x), batch)]
        seconds = time.perf_counter() - start
    except (ValueError, TypeError) as err:
        print(f"scoresde likelihood: error: {err}", file=sys.stderr)
        return 2
    cat = {k: torch.cat([getattr(r, k) for r in parts]) for k in ("nats", "bits_per_dim", "std_err", "prior_logp")}
    n, r0 = len(x), parts[0]
    print(f"scoresde likelihood: {what}, n = {n}, {sde!r}, trace {args.trace}", end="")
    print(f" ({args.probes} {args.probe} probes)" if args.trace == "hutchinson" else "", end="")
    print(f", {args.method} rtol {args.rtol:g} atol {args.atol:g} in {args.time}; log p at t_min = {r0.t_min:g}")
    spread = float(cat["nats"].std()) / n**0.5 if n > 1 else float("nan")
    deq = f" (dequantised, incl. d log Delta = {r0.log_bin_volume:.4g})" if kw else ""
    print(f"  mean log-likelihood {float(cat['nats'].mean()):.5f} nats +- {spread:.3g} (over samples){deq}")
    print(f"  mean NLL {float(cat['bits_per_dim'].mean()):.5f} bits/dim (d = {r0.dim})")
    se_mean = None
    if args.trace == "hutchinson" and args.probes > 1:
        se_mean = float(cat["std_err"].pow(2).sum().sqrt()) / n
        print(f"  Hutchinson std err: per sample {float(cat['std_err'].mean()):.4g}, of the mean {se_mean:.3g} nats")
    if gmm is not None:
        _exact_errors(args, gmm, sde, x, parts, cat["nats"], se_mean)
    nfes = [r.nfe for r in parts]
    print(f"  NFE {sum(nfes)} in {len(parts)} batch(es) (max {max(nfes)} per batch), {seconds:.2f} s")
    return 0


def _exact_errors(args, gmm, sde, x, parts, nats, se_mean) -> None:
    """An exact problem: the errors against its exact log-density at ``t_min``, also with the exact ``p_T`` as the
    prior (the integral's own error); with Hutchinson, in units of the standard error of the mean."""
    import torch

    n, r0 = len(x), parts[0]
    exact = gmm.log_prob(x, r0.t_min, sde)
    p_T = gmm.marginal(sde, r0.T)
    integ = torch.cat([r.nats - r.prior_logp + p_T.log_prob(r.x_T) for r in parts])
    for label, val in (("vs exact log p_t_min", nats), ("  with exact p_T as prior", integ)):
        err = val - exact
        extra = ""
        if args.trace == "hutchinson":  # in units of the standard error of the mean: reported and empirical
            extra = f", mean err / (sd err / sqrt n) {float(err.mean()) / (float(err.std()) / n**0.5):+.2f}"
            if args.probes > 1:
                extra += f", / reported std err of mean {float(err.mean()) / se_mean:+.2f}"
        print(
            f"  {label}: mean |err| {float(err.abs().mean()):.3g}, max |err| {float(err.abs().max()):.3g}, "
            f"mean err {float(err.mean()):+.3g} nats{extra}"
        )
