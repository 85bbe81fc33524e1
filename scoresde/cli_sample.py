"""``scoresde sample``'s sharded, resumable mode (``--shard-size``); ``--dtype`` is :mod:`scoresde.precision`.

``--device`` is where the network, the state and the noise live; a CPU run never touches CUDA.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch


def _files_sha256(folder: str | Path) -> str:
    folder, h = Path(folder), hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def sample_to_shards(args, device: str) -> int:
    """``scoresde sample --shard-size S --out DIR``: the samples as a resumable shard folder (see
    :mod:`scoresde.shards`); every process of a ``torchrun`` job calls it. Returns the exit status."""
    from . import data as data_mod
    from .cli import _load_guide
    from .precision import check_dtype_device, network_precision, state_dtype
    from .process_group import any_rank, world
    from .sample import sample
    from .shards import ShardMismatchError, open_everywhere, pending_everywhere, run_shards, share, weights_sha256
    from .train.pretrained import label_sampler, load_score, make_score

    rank, size = world()
    say = print if rank == 0 else (lambda *a, **k: None)
    if args.inpaint or args.save or args.force:
        which = "--inpaint" if args.inpaint else "--save" if args.save else "--force"
        say(
            f"scoresde sample: error: {which} does not go with --shard-size (the shards are the output)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    error = None
    try:
        check_dtype_device(args.dtype, device)
        _, sde, cfg, model = load_score(args.checkpoint, ema=not args.raw_weights, device=device)
        labels = label_sampler(args.label, args.checkpoint, getattr(model, "num_classes", None), args.seed)
        guide = _load_guide(args, device)
        # without labels (checked here as in a run without shards: guidance needs labels or a guide)
        score = make_score(model, sde, cfg.prediction, None, args.guidance, args.guidance_interval, guide=guide)
        identity = weights_sha256(model)
        for m in (model, guide or model):
            m.to(state_dtype(args.dtype))
        dims = tuple(data_mod.dataset_info(cfg.data)["shape"])
        method = args.method
        if args.fitted:
            from .fitted import load_fitted

            if args.grid or args.option:
                raise ValueError("--fitted runs on its own grid and weights: drop --grid and --option")
            method = load_fitted(args.fitted)
        key = {
            "score": identity,
            "weights": "raw" if args.raw_weights else "ema",
            "prediction": cfg.prediction,
            "sde": repr(sde),
            "dims": list(dims),
            "method": args.method if not args.fitted else f"fitted:{_files_sha256(args.fitted)}",
            "options": {k: v for k, v in sorted(dict(args.option).items())},
            "steps": args.steps,
            "grid": args.grid,
            "seed": args.seed,
            "denoise": args.denoise,
            "label": args.label,
            "guidance": args.guidance,
            "dtype": args.dtype,
            # absent unless given, so shard runs written before the option still resume
            **({"guidance_interval": list(args.guidance_interval)} if args.guidance_interval else {}),
            **({"guide": weights_sha256(guide)} if guide is not None else {}),
            "noise_device": torch.device(device).type,
            # a network's kernels may round differently at another batch size (2e-9 measured on the tiny U-Net)
            "batch_size": args.batch_size or args.shard_size,
        }
        run = open_everywhere(out, key, args.n, args.shard_size)
    except (ValueError, TypeError, OSError) as err:
        error = err
    if any_rank(error is not None):
        if error is not None and (rank == 0 or not isinstance(error, ShardMismatchError)):
            print(f"scoresde sample: error: {error}", file=sys.stderr)
        return 2

    batch = args.batch_size or args.shard_size
    common = dict(
        steps=args.steps, seed=args.seed, denoise=args.denoise, dtype=state_dtype(args.dtype), check=args.check
    )
    common |= dict(args.option) | ({"grid": args.grid} if args.grid else {})

    def draw(start: int, stop: int) -> dict:
        xs = []
        for b in range(start, stop, batch):
            e = min(stop, b + batch)
            y = labels(b, e)
            s = (
                score
                if y is None
                else make_score(
                    model, sde, cfg.prediction, y.to(device), args.guidance, args.guidance_interval, guide=guide
                )
            )
            with network_precision(args.dtype, device):
                xs.append(sample(s, sde, (e - b, *dims), method=method, device=device, sample_offset=b, **common).x)
        y = labels(start, stop)
        return {"x": torch.cat(xs).cpu()} | ({} if y is None else {"y": y})

    tag = f"[rank {rank}] " if size > 1 else ""
    pending = pending_everywhere(run, rank, size)
    already = run.num_shards - len(pending)
    mine = share(pending, rank, size)
    try:
        run_shards(run, draw, mine, say=lambda line: _line(tag + line))
    except (ValueError, TypeError) as err:
        error = err
        print(f"scoresde sample: error: {err}", file=sys.stderr)
    if any_rank(error is not None):
        return 2
    missing = run.pending() if rank == 0 else []
    if missing:  # cannot happen unless a file was removed while the run went on
        say(f"scoresde sample: error: {len(missing)} shards are still missing in {out}", file=sys.stderr)
        return 2
    procs = f" on {size} processes" if size > 1 else ""
    skipped = f", {already} of them already there" if already else ""
    say(f"{args.n} samples in {run.num_shards} shards of {args.shard_size}{skipped}{procs} -> {out}")
    return 0


def _line(text: str) -> None:
    """One line to stdout in a single write: the ranks share the pipe, and print's separate write of the newline
    let two ranks' lines run together."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
