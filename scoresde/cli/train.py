"""``scoresde train``: train a score network; checkpoints in ``--out``, ``--resume`` continues exactly.

Under torchrun the ranks train one model with DDP in one process group (:mod:`scoresde.train.distributed`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from ..names import DATASETS
from ..sde_names import CONFIG_NAMES
from .args import device, positive, seed

NAME = "train"
HELP = "train a score network (checkpoints in --out; --resume continues exactly)"


def add_arguments(t) -> None:
    t.add_argument("--config", help="a .json or .toml training config instead of the recipe (flags below override it)")
    t.add_argument("--data", choices=DATASETS, help="the data set (default: moons)")
    t.add_argument(
        "--recipe",
        choices=("auto", "none"),
        default="auto",
        help="auto (default): the data set's measured recipe, the settings behind the docs' figure for it "
        "(scoresde.train.recipes; printed before the run); none: TrainConfig's small defaults. Flags override either",
    )
    t.add_argument("--model", choices=("mlp", "unet"), help="architecture (default: mlp for 2-D sets, unet for digits)")
    t.add_argument("--class-conditional", action="store_true", default=None, help="train with labels (digits)")
    t.add_argument("--clusters", type=int, help="K > 0: condition on K clusters of the data (no labels needed)")
    t.add_argument(
        "--cluster-method",
        choices=("kmeans", "spectral"),
        help="how --clusters finds them: k-means on the pixels (default) or spectral on their neighbour graph",
    )
    t.add_argument(
        "--augment",
        type=float,
        help="P > 0: each of EDM's non-leaking augmentations (flip, quarter turns, shift) with probability P (images)",
    )
    t.add_argument("--prediction", choices=("eps", "x0", "v", "flow"), help="flow: the velocity eps - x0 (--sde flow)")
    t.add_argument(
        "--sde",
        choices=CONFIG_NAMES,
        help="the forward process: vp (linear VP SDE), subvp, ve, or flow (the rectified-flow path, shift 1)",
    )
    t.add_argument("--steps", type=positive, help="optimizer steps (>= 1)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=seed, help="seed (>= 0)")
    t.add_argument("--t-sampler", choices=("uniform", "stratified", "importance", "lognormal", "logit-normal"))
    t.add_argument("--weighting", choices=("unit", "likelihood", "min-snr"))
    t.add_argument("--lr-schedule", choices=("constant", "cosine"))
    t.add_argument("--warmup", type=int, help="learning-rate warm-up steps")
    t.add_argument("--ckpt-every", type=int)
    t.add_argument("--no-plots", action="store_true", help="do not write loss.png / samples.png at checkpoints")
    t.add_argument("--out", help="output folder (checkpoint and config.json; default: runs/default)")
    t.add_argument("--device", type=device, help="cpu, cuda, cuda:1, ... (one that exists here; default: cpu)")
    t.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="bfloat16: the network's forward pass under bfloat16 autocast; weights, optimiser and loss stay "
        "float32 (default float32)",
    )
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the checkpoint in --out (SIGINT / SIGTERM write one and stop; a second signal exits at once)",
    )
    t.add_argument("--no-progress", action="store_true")
    for action in t._actions:  # the training values' defaults are the recipe's (or TrainConfig's, --recipe none)
        if (
            action.default is None
            and action.dest not in ("config", "out", "device", "data")
            and ("default" not in (action.help or ""))
        ):
            action.help = f"{action.help or ''} (default: the recipe's)".strip()


def run(args) -> int:
    """``scoresde train``; under torchrun in one process group (gloo, nccl on CUDA): the ranks train one model with
    DDP on shares of every batch (scoresde/train/distributed.py), rank 0 alone writes and speaks."""
    from ..train.distributed import process_group

    with process_group(args.device):
        return _train(args)


def _config(args):
    """The training config: ``--config``'s file, the saved one of ``--resume``, or the defaults; flags override."""

    from ..train import TrainConfig

    if args.config:
        cfg = TrainConfig.from_file(args.config)
    elif args.resume and args.out and (Path(args.out) / "config.json").is_file():
        cfg = TrainConfig.from_saved(Path(args.out) / "config.json")
    elif args.recipe == "auto":
        cfg = _recipe(args).config(device=args.device or "cpu")
    else:
        cfg = TrainConfig()
    overrides = {
        "data": args.data,
        "class_conditional": args.class_conditional,
        "clusters": args.clusters,
        "cluster_method": args.cluster_method,
        "augment": args.augment,
        "prediction": args.prediction,
        "sde": {"name": args.sde} if args.sde else None,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "t_sampler": args.t_sampler,
        "weighting": args.weighting,
        "lr_schedule": args.lr_schedule,
        "warmup": args.warmup,
        "ckpt_every": args.ckpt_every,
        "plots": False if args.no_plots else None,
        "out": args.out,
        "device": args.device,
        "dtype": args.dtype,
    }
    if args.model and cfg.model.get("arch") != args.model:
        overrides["model"] = {"arch": args.model}
    return cfg.replace(**{k: v for k, v in overrides.items() if v is not None})


def _recipe(args):
    """The recipe of ``--data`` (with labels for ``--class-conditional``)."""
    from ..train.recipes import recipe

    return recipe(args.data or "moons", class_conditional=bool(args.class_conditional))


def _announce(args, cfg) -> None:
    """Rank 0 says which recipe runs, what it should take here and the quality the docs report for it; flags that
    changed a recipe value are named (the figure was measured without them)."""
    import torch

    from ..process_group import world
    from ..train import TrainConfig

    if args.config or args.recipe != "auto" or (args.resume and (Path(cfg.out) / "ckpt.json").exists()):
        return
    if world()[0] != 0:
        return
    rec = _recipe(args)
    base = rec.config(device=cfg.device)
    changed = [
        f"{f.name}={getattr(cfg, f.name)!r} (recipe: {getattr(base, f.name)!r})"
        for f in dataclasses.fields(TrainConfig)
        if f.name not in ("out", "device", "plots", "ckpt_every", "log_every")
        and getattr(cfg, f.name) != getattr(base, f.name)
    ]
    print(rec.describe(cfg, torch.get_num_threads()))
    if changed:
        print(f"  changed by flags, so the figure above does not apply as is: {', '.join(changed)}")
    sys.stdout.flush()


def _train(args) -> int:
    import signal

    from ..train import train
    from ..util import unwritable

    try:
        cfg = _config(args)
        problem = unwritable(Path(cfg.out))
        if problem:
            raise ValueError(f"--out: cannot write the checkpoint to {cfg.out!r}: {problem}")
        _announce(args, cfg)
        res = train(cfg, resume=args.resume, progress=not args.no_progress, handle_signals=True)
    except ValueError as err:  # bad config, or a missing / corrupt / mismatched checkpoint
        print(f"scoresde train: error: {err}", file=sys.stderr)
        return 2
    if res.interrupted is not None:
        print(
            f"scoresde train: stopped by {signal.Signals(res.interrupted).name} at step {res.step} of {cfg.steps}; "
            f"checkpoint in {res.out}; continue with: scoresde train --out {res.out} --resume",
            file=sys.stderr,
        )
        return 128 + res.interrupted
    tail = res.losses[-cfg.log_every :]
    mem = "n/a" if res.peak_memory_mib is None else f"{res.peak_memory_mib:.0f} MiB ({res.memory_kind})"
    print(
        f"step {res.step}: mean loss of the last {len(tail)} steps {sum(tail) / max(len(tail), 1):.4f}; "
        f"{res.examples_per_s:.0f} examples/s over {res.steps_run} steps; peak memory {mem}; "
        f"{res.num_parameters:,} parameters; checkpoint in {res.out}"
    )
    return 0
