"""MNIST for ``benchmarks/learned.py --only mnist``: score a class-conditional MNIST model as the docs report it,
the run trained here and the shipped one (``scoresde/weights/mnist``) the same way, so a retraining says how close
it came.

Every figure is FD on the MNIST judge's features (:mod:`scoresde.models.mnist_judge`) against the whole test split,
over its floor: ``n`` train images drawn at random scored the same way (:class:`scoresde.bench.LearnedProblem`,
both noised to the sampler's last time). "Unconditional" samples the data's law with the class-conditional
network: each sample's label drawn from the training frequencies (:func:`scoresde.train.draw_labels`, as
``scoresde sample --label prior``), no guidance, with ``dpm++2m`` at each budget and with the stochastic ``ddpm``
and ``dpm++2m-sde`` at the largest (on a network's score they correct part of the network's error); the null label
is reported beside it. Guided rows cycle the labels through the classes and add the judge's class accuracy and
its confident fraction (max softmax > 0.9). The network runs under bfloat16 autocast where the CPU has bfloat16
kernels, as it was trained (twice as fast).
"""

from __future__ import annotations

from pathlib import Path

import torch

import scoresde as sd
from scoresde.bench import LearnedProblem
from scoresde.models.mnist_judge import mnist_accuracy, mnist_classifier, mnist_confidence
from scoresde.plot import save_image_grid
from scoresde.precision import fast_bfloat16, network_precision
from scoresde.train import draw_labels, load_score, make_score

METHOD = "dpm++2m"
# On a network's score a stochastic sampler corrects part of the network's error from 20 NFE (the MNIST solver table
# of docs/guides/benchmark.md, and dpm++2m-sde on the checkerboard's network at 50 NFE in docs/guides/solvers.md): the
# unconditional law is also reported with both at the largest budget.
STOCHASTIC = ("ddpm", "dpm++2m-sde")
FLOOR_SEEDS = 3
PRECISION = "bfloat16" if fast_bfloat16("cpu") else "float32"


def evaluate(run: str | Path, n: int, seeds: tuple[int, ...], steps: tuple[int, ...], interval, out: Path, tag: str):
    """The model in ``run`` (a folder or a shipped name): unconditional FD / floor at each of ``steps`` (labels from
    the training frequencies) and with the null label at the middle one; guided (w = 1 inside ``interval`` in
    sigma / alpha, labels cycling through the classes) FD / floor, class accuracy and confidence at the largest;
    ``<tag>_*.png`` sample grids. The network runs under bfloat16 autocast where the CPU has the kernels (as it
    was trained), the sampler's state in float32."""
    prob = LearnedProblem(str(run))
    sde, clf, t_end = prob.sde, mnist_classifier(), prob.sde.t_min
    floors = prob.floors(sde, t_end, n, FLOOR_SEEDS)

    def measure(make, k: int, y=None, grid: str | None = None, method: str = METHOD) -> dict:
        fds, accs, confs = [], [], []
        for seed in seeds:
            with network_precision(PRECISION, "cpu"):
                s = sd.sample(make(seed), sde, (n, 1, 28, 28), method=method, steps=k, seed=seed, denoise=False)
            fds.append(prob.quality(s.x, sde, float(s.times[-1]), seed=7)["fd"])
            confs.append(mnist_confidence(s.x, classifier=clf))
            if y is not None:
                accs.append(mnist_accuracy(s.x, y, clf))
            if grid is not None and seed == seeds[0]:
                order = torch.arange(100) if y is None else torch.argsort(y[:100], stable=True)
                save_image_grid(s.x[:100][order], out / f"{tag}_{grid}.png", nrow=10)
        ratio = torch.tensor(fds, dtype=torch.float64) / floors["fd_floor"]
        row = {
            "fd": sum(fds) / len(fds),
            "fd_over_floor": float(ratio.mean()),
            "fd_over_floor_seeds": [round(float(v), 4) for v in ratio],
            "confident": sum(confs) / len(confs),
            "nfe": s.nfe,
        }
        return row | ({"accuracy": sum(accs) / len(accs)} if accs else {})

    counts = prob.label_counts
    net, pred = prob.model, prob.config.prediction

    def prior(seed):
        return make_score(net, sde, pred, y=draw_labels(counts, n, seed))

    rows = {}
    for k in steps:
        grid = "uncond_samples" if k == max(steps) else None
        rows[f"{METHOD}-{k}, labels from the training frequencies"] = measure(prior, k, grid=grid)
    for method in STOCHASTIC:
        rows[f"{method}-{max(steps)}, labels from the training frequencies"] = measure(prior, max(steps), method=method)
    k = sorted(steps)[len(steps) // 2]  # the null label: what drawing the labels adds, at a middle budget
    rows[f"{METHOD}-{k}, null label"] = measure(lambda seed: make_score(net, sde, pred), k)
    y = torch.arange(n) % 10
    score = load_score(run, y=y, guidance=1.0, guidance_interval=interval)[0]
    name = f"w=1, sigma/alpha in ({interval[0]:g}, {interval[1]:g}]"
    guided = {name: measure(lambda seed: score, max(steps), y=y, grid="guided_samples")}
    return {"n": n, "seeds": list(seeds), "method": METHOD, "floors": floors, "samples": rows, "guided": guided}


def closeness(new: dict, shipped: dict) -> dict:
    """``new``'s figures over the shipped model's, row by row (FD / floor ratio and accuracy difference)."""
    out = {}
    for part in ("samples", "guided"):
        for name, row in new[part].items():
            ref = shipped[part].get(name)
            if ref is None:
                continue
            out[name] = {"fd_over_floor": row["fd_over_floor"], "shipped": ref["fd_over_floor"]}
            if "accuracy" in row:
                out[name] |= {"accuracy": row["accuracy"], "shipped_accuracy": ref["accuracy"]}
    return out
