"""How much a digits model has memorised its training set: its denoising error on the train split against the test
split, per noise level.

    python benchmarks/memorization.py results/learned/runs/digits-uncond results/learned/runs/digits
    python benchmarks/memorization.py --quick DIR ...      # 64 images a split, one noise draw

For each checkpoint, every image of a split is noised to ``sigma / alpha`` = 0.1, 0.3, 1 and 3 with the same
seeded noise for every model, and the mean squared error of the model's ``E[x0 | x_t]`` (EMA weights) is averaged
over ``--draws`` noise draws. A model that generalises has about the same error on both splits; a train error far
below the test error at low noise means the network reproduces training images (the digits train split has 1,438
of them). Labels: a class-conditional model gets each image's class; a cluster model the stored k-means cluster of
each training image, and for a test image the cluster of the nearest centroid (how k-means assigns a new point);
an unconditional model none. Prints a markdown table; ``--out FILE`` also writes it, atomically.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import scoresde as sd
from scoresde.checkpoint import load_checkpoint
from scoresde.train import TrainConfig, load_score, make_score
from scoresde.util import atomic_write_text

LEVELS = (0.1, 0.3, 1.0, 3.0)  # sigma / alpha


def _time_at(sde, level: float) -> float:
    """The time where ``sigma / alpha = level``: log-SNR ``-2 log(level)``."""
    return float(sde.t_from_log_snr(torch.tensor(-2 * math.log(level), dtype=torch.float64)))


def _labels(run: Path, cfg: TrainConfig, splits: dict) -> dict:
    if cfg.class_conditional:
        return {k: y for k, (_, y) in splits.items()}
    if not cfg.clusters:
        return dict.fromkeys(splits)
    train = torch.as_tensor(load_checkpoint(run).extra["cluster_labels"])
    x_tr = splits["train"][0].reshape(len(train), -1).double()
    centres = torch.stack([x_tr[train == c].mean(0) for c in range(cfg.clusters)])
    x_te = splits["test"][0].reshape(len(splits["test"][0]), -1).double()
    return {"train": train, "test": torch.cdist(x_te, centres).argmin(1)}


def denoising_errors(run: Path, n: int | None, draws: int) -> dict:
    """``{split: [mse at each of LEVELS]}`` for the checkpoint ``run``."""
    cfg = TrainConfig.from_saved(run / "config.json")
    if cfg.data != "digits":
        raise ValueError(f"{run}: a digits model is needed, got data={cfg.data!r}")
    splits = {s: sd.data.digits(s, seed=cfg.data_seed) for s in ("train", "test")}
    labels = _labels(run, cfg, splits)
    _, sde, _, net = load_score(run)  # once: each split only labels it differently
    out = {}
    for split, (x, _) in splits.items():
        y = labels[split]
        if n is not None:
            x, y = x[:n], None if y is None else y[:n]
        score = make_score(net, sde, cfg.prediction, y)
        errors = []
        for level in LEVELS:
            t = torch.full((x.shape[0],), _time_at(sde, level))
            a, s = (v.view(-1, 1, 1, 1) for v in (sde.alpha(t), sde.marginal_std(t)))
            g = torch.Generator().manual_seed(1234)
            total = 0.0
            with torch.no_grad():
                for _ in range(draws):
                    eps = torch.randn(x.shape, generator=g)
                    total += float(((score.x0(a * x + s * eps, t) - x) ** 2).mean())
            errors.append(total / draws)
        out[split] = errors
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="checkpoint directories of digits models")
    p.add_argument("--draws", type=int, default=4, help="noise draws per image and level (default: %(default)s)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args(argv)
    head = " | ".join(f"{v:g}" for v in LEVELS)
    lines = [
        "x0 mean squared error per noise level sigma / alpha (train split / test split)\n",
        f"| model | split | {head} |",
        "|---|---|" + "---:|" * len(LEVELS),
    ]
    for run in map(Path, args.runs):
        errors = denoising_errors(run, 64 if args.quick else None, 1 if args.quick else args.draws)
        for split, row in errors.items():
            lines.append(f"| {run} | {split} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
        ratio = [te / tr for tr, te in zip(errors["train"], errors["test"], strict=True)]
        lines.append(f"| {run} | test / train | " + " | ".join(f"{v:.1f}x" for v in ratio) + " |")
    md = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(Path(args.out), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
