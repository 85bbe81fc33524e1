"""``scoresde fields``: the score, PF-ODE or reverse-SDE drift field of a 2-D problem or model at several t (PNG,
optional GIF)."""

from __future__ import annotations

import sys

from ..sde_names import SDES
from .args import at_least_2, csv

NAME = "fields"
HELP = "score, PF-ODE or reverse-SDE drift field of a 2-D problem or model (PNG, GIF)"


def add_arguments(fl) -> None:
    fl.add_argument("--problem", help="an exact 2-D problem (default: ring)")
    fl.add_argument("--checkpoint", help="a trained 2-D model's checkpoint directory instead of --problem")
    fl.add_argument("--t", type=csv(float), help="comma-separated times in (0, T] (default: 0.05,0.2,0.5,T)")
    fl.add_argument("--kind", default="score", choices=("score", "pf-drift", "sde-drift"), help="default: %(default)s")
    fl.add_argument("--sde", default="vp", choices=tuple(SDES), help="for --problem (default: %(default)s)")
    fl.add_argument("--style", default="stream", choices=("stream", "quiver"), help="default: %(default)s")
    fl.add_argument(
        "--lim",
        type=float,
        help="plot [-lim, lim]^2 (default: 4.5 for a problem; for a checkpoint, its training data's extent)",
    )
    fl.add_argument("--grid-size", type=at_least_2, default=40, help="grid points a side (default: %(default)s)")
    fl.add_argument("--out", default="fields.png", help="the figure: .png, .pdf or .svg (default: %(default)s)")
    fl.add_argument("--animate", help="also write a GIF of the field over t (from max to min of --t)")
    fl.add_argument("--frames", type=at_least_2, default=24, help="animation frames (default: %(default)s)")
    fl.add_argument("--force", action="store_true", help="overwrite existing --out / --animate files")
    fl.add_argument("--raw-weights", action="store_true", help="checkpoint: the raw weights instead of the EMA")


def _refusal(args) -> str | None:
    """What is wrong with the arguments or the output files, before anything is loaded; ``None`` if nothing."""
    from pathlib import Path

    from ..util import unwritable

    if args.problem is not None and args.checkpoint is not None:
        return "give at most one of --problem NAME and --checkpoint DIR"
    if args.t is not None and not args.t:
        return "--t: give at least one time, e.g. --t 0.05,0.2,0.5,1.0"
    if args.lim is not None and not args.lim > 0:
        return f"--lim must be > 0, got {args.lim:g}"
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        return f"--out must end in .png, .pdf or .svg, got {args.out!r}"
    targets = [out]
    if args.animate is not None:
        if Path(args.animate).suffix.lower() != ".gif":
            return f"--animate must end in .gif, got {args.animate!r}"
        targets.append(Path(args.animate))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        flag = "--out" if str(out) in existing else "--animate"
        return f"{flag}: {', '.join(existing)} already exists; pass --force to overwrite it, or choose another name"
    for target, flag in zip(targets, ("--out", "--animate"), strict=False):
        problem = unwritable(target.parent)
        if problem:
            return f"{flag}: cannot write to {str(target.parent)!r}: {problem}"
    return None


def _field(args):
    """``(field, sde, label, data)``: a 2-D checkpoint's score and 2,000 points of its training data, or an exact 2-D
    problem on ``--sde`` (its density is drawn behind the field)."""
    if args.checkpoint is not None:
        from .. import data as data_mod
        from ..train import load_score

        try:
            field, sde, cfg, _ = load_score(args.checkpoint, ema=not args.raw_weights)
        except (ValueError, OSError) as err:
            raise ValueError(f"--checkpoint: {err}") from None

        if tuple(data_mod.dataset_info(cfg.data)["shape"]) != (2,):
            raise ValueError(f"--checkpoint: fields need a 2-D model, {args.checkpoint} is trained on {cfg.data}")
        data = data_mod.toy_2d(cfg.data, 2000, seed=cfg.data_seed)
        return field, sde, f"{cfg.data} model", data
    from ..problems import get_problem
    from ..sde_names import make_sde

    name = args.problem or "ring"
    try:
        field, sde, label = get_problem(name), make_sde(args.sde), "exact"
    except ValueError as err:
        raise ValueError(f"--problem: {err}") from None
    if field.dim != 2:
        raise ValueError(f"--problem: fields need a 2-D problem (ring), {name} has d = {field.dim}")
    return field, sde, label, None


def run(args) -> int:
    """``scoresde fields``: the score / drift field of a 2-D problem or model at several t (PNG, optional GIF)."""

    def fail(message: str) -> int:
        print(f"scoresde fields: error: {message}", file=sys.stderr)
        return 2

    from pathlib import Path

    refusal = _refusal(args)
    if refusal is not None:
        return fail(refusal)
    try:
        field, sde, label, data = _field(args)
        ts = tuple(args.t) if args.t is not None else (0.05, 0.2, 0.5, sde.T)
        bad = [t for t in ts if not 0 < t <= sde.T]
        if bad:
            raise ValueError(f"--t: times must lie in (0, {sde.T:g}], got {', '.join(f'{t:g}' for t in bad)}")
        from ..plot import animate_fields, data_extent, plot_fields, save_figure

        lim = args.lim if args.lim is not None else 4.5 if data is None else data_extent(data)
        kw = dict(lim=lim, n=args.grid_size, data=data)
        fig = plot_fields({label: field}, sde, ts, args.kind, style=args.style, **kw)
        out = Path(args.out)
        save_figure(fig, out, dpi=110)
        over = "" if data is None else f", over {len(data)} training points"
        print(f"{args.kind} field at t = {', '.join(f'{t:g}' for t in ts)} on [-{lim:g}, {lim:g}]^2{over} -> {out}")
        if args.animate is not None:
            lo, hi = min(ts), max(ts)
            frames = [hi * (lo / hi) ** (i / max(args.frames - 1, 1)) for i in range(args.frames)]
            animate_fields(field, sde, frames, args.animate, args.kind, **kw)
            print(f"animation, {args.frames} frames from t = {hi:g} to {lo:g} -> {args.animate}")
    except ValueError as err:
        return fail(str(err))
    return 0
