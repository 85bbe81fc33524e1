"""What ``scoresde sample`` does before it samples, in one place for a plain run and a sharded one
(:mod:`scoresde.cli.shards`): the checkpoint, the guide, the labels, the score, the method; the device per rank;
the progress bar."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class Prepared:
    """A checkpoint made ready to sample: its network (and guide) on the device, its score and the method."""

    sde: object
    cfg: object  # the checkpoint's TrainConfig
    net: object
    guide: object | None  # --guide's network, or None
    labels: object  # (start, stop) -> the labels of those samples, or None for an unlabelled model
    y: object | None  # labels(0, n) for a plain run, None for shards (they draw their labels per batch)
    score: object  # the score with this process's share of y (or none), guidance and guide applied
    dims: tuple[int, ...]  # one sample's shape
    method: object  # --method, or the FittedSolver of --fitted

    def to_state_dtype(self, dtype: str) -> None:
        """float64 weights for a float64 run; bfloat16 autocasts a float32 network."""
        from ..precision import state_dtype

        for m in (self.net, self.guide or self.net):
            m.to(state_dtype(dtype))


def prepare(args, device: str, part: tuple[int, int] | None = None) -> Prepared:
    """Check ``--dtype`` on ``device``, load ``--checkpoint`` and ``--guide``, draw the labels, build the score and
    resolve ``--fitted``. ``part``: this process's samples ``[start, stop)`` of ``labels(0, n)``, whose labels the
    score takes; ``None``: the score without labels (checked as in a plain run: guidance needs labels or a guide).
    Raises ``ValueError`` / ``TypeError`` with the message for the user."""
    from ..data import dataset_info
    from ..precision import check_dtype_device
    from ..train.pretrained import label_sampler, load_guide, load_score, make_score

    check_dtype_device(args.dtype, device)
    _, sde, cfg, net = load_score(args.checkpoint, ema=not args.raw_weights, device=device)
    guide = None
    if args.guide is not None:
        guide = load_guide(args.guide, args.checkpoint, ema=not args.raw_weights, device=device)
    labels = label_sampler(args.label, args.checkpoint, getattr(net, "num_classes", None), args.seed)
    y = y_part = None
    if part is not None:
        start, stop = part
        y = labels(0, args.n)
        y_part = y if y is None or stop == start else y[start:stop]
    score = make_score(net, sde, cfg.prediction, y_part, args.guidance, args.guidance_interval, guide=guide)
    method = args.method
    if args.fitted:
        from ..fitted import load_fitted

        if args.grid or args.option:
            raise ValueError("--fitted runs on its own grid and weights: drop --grid and --option")
        method = load_fitted(args.fitted)
    dims = tuple(dataset_info(cfg.data)["shape"])
    return Prepared(sde, cfg, net, guide, labels, y, score, dims, method)


def rank_device(device: str) -> str:
    """``--device cuda`` under torchrun: one GPU per process, as torchrun numbers them (``LOCAL_RANK``)."""
    import os

    from ..process_group import world

    rank, size = world()
    if size > 1 and device == "cuda":
        return f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    return device


def progress_bar(method, steps: int, show: bool):
    """A tqdm bar moved by the per-step callback, for grid solvers (the stepping loop); engine solvers would step
    differently (by the last bits) when given a callback, and adaptive ones have no step count: they get no bar."""
    if not show:
        return None
    from ..solvers import Solver, get_solver

    cls, total = (type(method), method.steps) if isinstance(method, Solver) else (get_solver(method), steps)
    if cls.engine:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling", unit="step", file=sys.stderr)
