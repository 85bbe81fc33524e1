"""One sampling seed of a learned digits model, scored as ``benchmarks/learned.py`` scores it: shared by the
benchmarks that sample learned.py's digits models under other guidance (``autoguidance.py``,
``guidance_interval.py``)."""

from __future__ import annotations

from pathlib import Path

import torch

import scoresde as sd
from scoresde.train import draw_labels, load_score

N = 1437  # the train split's size: the FD floor is test vs train


def labels(run: Path, config, seed: int) -> torch.Tensor | None:
    """The labels a run is sampled with: classes cycling for a class-conditional model, each sample's cluster drawn
    with ``seed`` for a cluster model, none for an unconditional one."""
    if config.class_conditional:
        return torch.arange(N) % 10
    return draw_labels(run, N, seed) if config.clusters else None


def score_seed(run: Path, prob, floor: float, clf, seed: int, steps: int, **load) -> dict:
    """Sample ``run`` (``load``: ``load_score``'s guidance arguments) with ``dpm++2m`` at ``steps`` steps and
    ``seed``: FD / floor, NFE, the rows ``run``'s network evaluates per sample (a classifier-free guided step
    evaluates it twice; an autoguidance guide's calls are not counted) and, for a class-conditional model, class
    accuracy."""
    from scoresde.models.classifier import digit_accuracy

    y = labels(run, prob.config, seed)
    score, sde, _, model = load_score(run, y=y, **load)
    rows = []
    hook = model.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    try:
        s = sd.sample(score, sde, (N, 1, 8, 8), method="dpm++2m", steps=steps, seed=seed, denoise=False)
    finally:
        hook.remove()
    fd = prob.quality(s.x, sde, float(s.times[-1]), seed=7)["fd"]
    fig = {"fd_over_floor": fd / floor, "nfe": s.nfe, "evals": sum(rows) / N}
    return fig | ({"accuracy": digit_accuracy(s.x, y, clf)} if prob.config.class_conditional else {})
