"""``scoresde sample``: sample a trained checkpoint (PNG grid, tensors), with guidance or inpainting.

Under ``torchrun`` each process samples its shard and rank 0 gathers and writes; ``--shard-size`` writes a
resumable folder of shards instead (:mod:`scoresde.cli.shards`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..names import SHIPPED_MODELS
from .args import device, interval, option, positive, seed, suffix

NAME = "sample"
HELP = "sample a trained checkpoint (PNG grid, tensors), with guidance or inpainting"
DEFAULT_METHOD, DEFAULT_STEPS = "dpm++2m", 50


def add_arguments(sp) -> None:
    sp.add_argument("--checkpoint", required=True, help="the training output folder")
    sp.add_argument(
        "--method",
        help=f"a name from `scoresde methods` (default: {DEFAULT_METHOD}, the method the docs' figures of a trained "
        "model use)",
    )
    sp.add_argument(
        "--steps", type=positive, help=f"solver steps (default: {DEFAULT_STEPS}; adaptive methods choose their own)"
    )
    sp.add_argument("--grid", help="uniform, quadratic, logsnr, optimized, ... (default: the method's own)")
    sp.add_argument(
        "--n",
        "--num-samples",
        dest="n",
        type=positive,
        default=100,
        help="number of samples (default: %(default)s); under torchrun write --num-samples (torchrun reads --n)",
    )
    sp.add_argument("--seed", type=seed, default=0, help="seed (default: %(default)s)")
    sp.add_argument(
        "--label",
        help="a labelled model's class (0-9 for digits), 'all' to cycle through the classes, or 'prior' to draw each "
        "sample's from the training frequencies (how a cluster-conditional model samples its data)",
    )
    sp.add_argument(
        "--guidance", type=float, default=0.0, help="guidance weight w >= 0 (classifier-free, or of --guide)"
    )
    sp.add_argument(
        "--guide",
        metavar="CHECKPOINT",
        help="autoguidance: guide with this weaker model (same data, SDE, prediction and labels; smaller or trained "
        "shorter) instead of the null label, out = (1 + w) model - w guide; works for unconditional models too",
    )
    sp.add_argument(
        "--guidance-interval",
        type=interval,
        help="apply the guidance only at noise levels LO < sigma/alpha <= HI, written LO,HI (HI may be inf)",
    )
    sp.add_argument(
        "--inpaint",
        help="fill in test examples under a mask: left, right, top, bottom, center, random:P (images), or dims:I,J,... "
        "(the listed flat indices known; any data, e.g. dims:0 for a 2-D set's x coordinate)",
    )
    sp.add_argument("--resample", type=int, default=1, help="RePaint passes per step (with --inpaint; default: 1)")
    sp.add_argument("--option", type=option, action="append", default=[], help="a method option, e.g. eta=1")
    sp.add_argument(
        "--denoise",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="finish with one Tweedie denoising step x <- E[x0 | x_tmin], one more model call (default: on; the "
        "state at t_min still carries noise of std sigma(t_min), 1.24x the floor on the checkerboard by itself)",
    )
    sp.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    _add_output_arguments(sp)


def _add_output_arguments(sp) -> None:
    """Where the samples go, how they are computed (device, dtype, shards, checks)."""
    sp.add_argument("--out", default="samples", help="output stem: <out>.png and the --save files")
    sp.add_argument(
        "--save", action="append", default=[], type=suffix, help="tensor formats: safetensors, npz (repeatable)"
    )
    sp.add_argument("--force", action="store_true", help="overwrite an existing <out>.png and --save files")
    sp.add_argument(
        "--fitted", help="a folder written by `scoresde fit`: its own method, steps and grid (refuses those flags)"
    )
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--device", type=device, default="cpu", help="default: %(default)s")
    sp.add_argument(
        "--dtype",
        choices=("float32", "float64", "bfloat16"),
        default="float32",
        help="state and noise dtype; bfloat16: float32 state, the network under bfloat16 autocast "
        "(default: %(default)s)",
    )
    sp.add_argument(
        "--shard-size",
        type=positive,
        help="write --out as a folder of shards of this many samples with a manifest; a rerun completes it",
    )
    sp.add_argument("--batch-size", type=positive, help="samples per model batch with --shard-size (default: a shard)")
    sp.add_argument(
        "--check",
        choices=("step", "call", "end"),
        default="step",
        help="test for NaN/inf after every step, every model call, or at the end (default: %(default)s; one host "
        "sync each)",
    )


def run(args) -> int:
    """``scoresde sample``; under ``torchrun`` each process samples its shard and rank 0 gathers and writes."""
    if not Path(args.checkpoint).is_dir() and args.checkpoint not in SHIPPED_MODELS:  # before torch is imported
        print(
            f"scoresde sample: error: no checkpoint: directory {args.checkpoint} does not exist (nor is it a shipped "
            f"model: {', '.join(SHIPPED_MODELS)})",
            file=sys.stderr,
        )
        return 2
    from ..process_group import launched
    from .sampling import rank_device

    try:
        resolve(args)
    except ValueError as err:
        print(f"scoresde sample: error: {err}", file=sys.stderr)
        return 2
    with launched():
        if args.shard_size:
            from .shards import sample_to_shards

            return sample_to_shards(args, rank_device(args.device))
        return _sample_run(args)


def _refused_out(args, rank: int) -> bool:
    """``--out``'s files exist (without ``--force``) or its folder is not writable: said on stderr, on any rank."""
    from pathlib import Path

    from ..distributed import any_rank
    from ..util import unwritable

    stem = Path(args.out)
    targets = [stem.with_suffix(".png"), *(stem.with_suffix(x) for x in args.save)]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.force:
        if rank == 0:  # one process speaks and writes
            print(
                f"scoresde sample: error: --out: {', '.join(existing)} already exists; pass --force to overwrite it, "
                "or choose another --out",
                file=sys.stderr,
            )
        return True
    problem = unwritable(stem.parent) if rank == 0 else None
    if problem:
        print(f"scoresde sample: error: --out: cannot write to {str(stem.parent)!r}: {problem}", file=sys.stderr)
    return any_rank(bool(problem))


def _sample_run(args) -> int:
    from ..conditioning import inpaint, make_mask
    from ..data import get_dataset
    from ..distributed import any_rank, gather_samples, shard, world
    from ..precision import network_precision, state_dtype
    from ..sample import sample
    from .sampling import prepare, progress_bar, rank_device

    rank, size = world()
    if _refused_out(args, rank):
        return 2
    device = rank_device(args.device)
    n = args.n
    start, stop = shard(n, rank, size)  # this process's samples [start, stop), drawn with sample_offset=start
    out, error, x_known, mask = None, None, None, None
    try:
        p = prepare(args, device, (start, stop))
        p.to_state_dtype(args.dtype)
        common = dict(method=p.method, steps=args.steps, seed=args.seed, denoise=args.denoise, **dict(args.option))
        if args.grid:
            common["grid"] = args.grid
        if args.fitted:
            common.pop("steps")  # the fitted solver's own
        bar = progress_bar(common["method"], args.steps, rank == 0 and not args.no_progress and not args.inpaint)
        if bar is not None:
            common["callback"] = lambda info: bar.update(1) and None  # tqdm returns True when it redraws
        if args.inpaint:
            x_test, _ = get_dataset(p.cfg.data, "test", n=n, seed=p.cfg.data_seed)
            if x_test.shape[0] < n:
                raise ValueError(f"--inpaint needs n <= {x_test.shape[0]} test examples, got {n}")
            x_known = x_test[:n].to(device=device, dtype=state_dtype(args.dtype))  # inpaint follows its dtype
            mask = make_mask(args.inpaint, p.dims, seed=args.seed).to(device)
            if stop > start:
                with network_precision(args.dtype, device):
                    out = inpaint(
                        p.score, x_known[start:stop], mask, resample=args.resample, sample_offset=start, **common
                    )
        elif stop > start:
            with network_precision(args.dtype, device):
                shape, dtype = (stop - start, *p.dims), state_dtype(args.dtype)
                out = sample(
                    p.score, p.sde, shape, device=device, dtype=dtype, sample_offset=start, check=args.check, **common
                )
        if bar is not None:
            bar.close()
    except (ValueError, TypeError) as err:
        error = str(err)
        print(f"scoresde sample: error: {err}", file=sys.stderr)
    if any_rank(error is not None):
        return 2
    out = gather_samples(out)
    if rank != 0:
        return 0
    _write(args, p, out, x_known, mask, size)
    return 0


def _write(args, p, out, x_known, mask, size: int) -> None:
    """Rank 0: the PNG (an image grid, or the points over test data), the ``--save`` tensors and the line that
    says what ran."""
    from pathlib import Path

    import torch

    from ..data import get_dataset
    from ..plot import save_image_grid, save_points
    from ..util import save_tensors

    stem, n = Path(args.out), args.n
    x = out.x.cpu()
    if x.ndim == 4:
        images = torch.cat([x_known.cpu().where(mask.cpu(), torch.tensor(-1.0)), x]) if args.inpaint else x
        save_image_grid(images, stem.with_suffix(".png"), nrow=min(n, 10))
    elif x.shape[1] == 2:
        ref, _ = get_dataset(p.cfg.data, "test", n=max(n, 2000), seed=p.cfg.data_seed)
        save_points(x, stem.with_suffix(".png"), reference=ref, title=f"{_title(args, p)}, {out.nfe} NFE")
    tensors = {"x": x} | ({"y": p.y} if p.y is not None else {})
    for ext in args.save:
        save_tensors(stem.with_suffix(ext), tensors, metadata={"method": out.method, "nfe": str(out.nfe)})
    procs = f" on {size} processes" if size > 1 else ""
    what = f"the fitted solver in {args.fitted}" if args.fitted else f"{args.method} ({_grid_words(args, out)})"
    if args.denoise:
        what += " and one denoising call"
    extra = [f"{out.fit_nfe} pilot calls for the grid"] if out.fit_nfe else []
    if out.check_nfe:
        from ..fitted import FittedSolver

        extra.append(f"{out.check_nfe} fingerprint check call on {FittedSolver.PROBE_ROWS} probe rows")
    extra = f" (+ {', '.join(extra)})" if extra else ""
    print(f"{n} samples with {what} in {out.nfe} NFE{extra}{procs} -> {stem.with_suffix('.png')}")


def _title(args, p) -> str:
    """The picture's title: what ran (a fitted solver by its folder and its base method)."""
    if args.fitted:
        return f"fitted solver ({args.fitted}, {p.method.steps} steps)"
    return f"{args.method}, {args.steps} steps" + (" + denoise" if args.denoise else "")


def _grid_words(args, out) -> str:
    """``50 steps on its quadratic grid`` / ``10 steps on the optimized grid``: the steps and the grid that ran."""
    from ..solvers import get_solver

    cls = get_solver(args.method)
    if cls.adaptive:
        return f"adaptive, {out.nfe - int(args.denoise)} model calls"
    grid = f"the {args.grid}" if args.grid else f"its {cls.make(**dict(args.option)).default_grid}"
    return f"{args.steps} steps on {grid} grid"


def resolve(args) -> None:
    """Fill in ``--method`` and ``--steps`` and refuse flags that would be ignored: ``--method``, ``--steps`` or
    ``--grid`` beside ``--fitted`` (it brings its own), ``--steps`` or ``--grid`` with an adaptive method (it
    chooses its own steps). Raises ``ValueError`` naming the flag."""
    from ..solvers import get_solver

    if args.fitted:
        given = [f for f, v in (("--method", args.method), ("--steps", args.steps), ("--grid", args.grid)) if v]
        if given:
            raise ValueError(f"--fitted runs its own method, steps and grid: drop {', '.join(given)}")
        return
    args.method = args.method or DEFAULT_METHOD
    cls = get_solver(args.method)
    try:
        cls.make(**dict(args.option))  # the options, checked before anything is printed
    except TypeError as err:
        raise ValueError(f"--option: {err}") from None
    if cls.adaptive and (args.steps or args.grid):
        flag = "--steps" if args.steps else "--grid"
        raise ValueError(
            f"{flag} does not apply to the adaptive method {args.method!r}, which chooses its own steps "
            "(set its tolerances with --option rtol=...,atol=...)"
        )
    args.steps = args.steps or DEFAULT_STEPS
