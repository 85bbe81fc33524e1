"""``scoresde fit``: a few-step solver (grid and weights) fitted to a checkpoint or an exact problem, written to
``--out`` (:func:`scoresde.fit_solver`)."""

from __future__ import annotations

import sys

from .args import device, positive

NAME = "fit"
HELP = "fit a few-step solver (grid and weights) to a checkpoint or an exact problem"


def add_arguments(ft) -> None:
    ft.add_argument("--checkpoint", help="a `scoresde train` folder")
    ft.add_argument("--problem", help="an exact problem instead: ring, gmm16, gmm64, gmm-family:d=D,k=K,seed=S")
    ft.add_argument("--steps", type=positive, default=5, help="model calls per sample, 2 to 10 (default: %(default)s)")
    ft.add_argument(
        "--budget", type=positive, default=10_000, help="sample-evaluations of the fit (default: %(default)s)"
    )
    ft.add_argument("--out", required=True, help="the folder to write fitted.json and fitted.safetensors to")
    ft.add_argument("--force", action="store_true", help="replace a fitted solver already in --out")
    ft.add_argument("--device", type=device, default="cpu", help="default: %(default)s")
    ft.add_argument("--raw-weights", action="store_true", help="checkpoint: the raw weights instead of the EMA")


def _refusal(args) -> str | None:
    """What is wrong with ``--out`` or the source, before anything is loaded; ``None`` if nothing."""
    from pathlib import Path

    from ..util import unwritable

    out = Path(args.out)
    if (out / "fitted.json").exists() and not args.force:
        return f"--out: {out} already holds a fitted solver; pass --force to replace it"
    problem = unwritable(out.parent if not out.exists() else out)
    if problem:
        return f"--out: cannot write to {str(out)!r}: {problem}"
    if (args.checkpoint is None) == (args.problem is None):
        return "give exactly one of --checkpoint DIR or --problem NAME"
    return None


def run(args) -> int:
    """``scoresde fit``: a few-step solver fitted to a checkpoint or an exact problem, written to --out."""
    from pathlib import Path

    from ..fitted import FitError, fit_solver

    refusal = _refusal(args)
    if refusal is not None:
        print(f"scoresde fit: error: {refusal}", file=sys.stderr)
        return 2
    try:
        if args.checkpoint is not None:
            from .. import data as data_mod
            from ..train import load_score

            score, _, cfg, _ = load_score(args.checkpoint, ema=not args.raw_weights, device=args.device)
            dims = tuple(data_mod.dataset_info(cfg.data)["shape"])
        else:
            from ..problems import get_problem
            from ..sde_names import make_sde

            gmm = get_problem(args.problem)
            score, dims = gmm.score(make_sde("vp")), (gmm.dim,)
        fitted = fit_solver(score, args.steps, dims, budget=args.budget)
    except (ValueError, FitError) as err:
        print(f"scoresde fit: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    fitted.save(out)
    m = fitted.meta
    print(
        f"fitted {args.steps} steps on grid {m['grid_name']} ({'with' if fitted.corrector is not None else 'no'} "
        f"corrector): {m['fit_nfe']} model calls on {m['fit_batch']} samples + 1 on the {fitted.PROBE_ROWS} "
        f"fingerprint probe rows = {m['fit_evals']} sample-evaluations; written to {out}"
    )
    return 0
