"""The benchmark's problems: where the score comes from and what its samples are compared with.

Every problem has the same face (:class:`BenchProblem`), so the runner never asks which kind it holds:
:class:`ExactProblem` is a built-in Gaussian mixture with its exact score (the instrument that separates
solver error), :class:`LearnedProblem` a trained checkpoint scored against fresh data.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from .. import data as data_mod
from ..metrics import (
    assign_modes,
    histogram_tv,
    median_bandwidth,
    mmd_rbf,
    mode_conditional_swd,
    mode_diagnostics,
    sliced_wasserstein,
)
from ..param import EpsilonScore, FlowVelocityScore, Score
from ..problems import GaussianMixture, get_problem
from ..sde import SDE, VPSDE
from .config import expand_problems, family_of, split_problems

if TYPE_CHECKING:
    from .config import TimedModel

__all__ = [
    "BenchProblem",
    "ExactProblem",
    "LearnedProblem",
    "make_problem",
    "quality",
    "floors",
    "METRICS",
    "MEASURE_REVISION",
    "split_problems",
    "expand_problems",
    "family_of",
]

METRICS = ("mode_swd", "weight_err", "mean_err", "cov_err", "swd", "mmd")
# The revision of how a run is measured; part of every row's key, so a change of a metric redoes the rows.
# 2: the MMD kernel's bandwidth is fixed per target (median_bandwidth of exact draws), not per compared pair;
#    learned 2-D problems add the histogram total variation ("tv", their primary figure).
# 3: a fitted row's fit_evals (and nfe_amortised) include the fingerprint check's probe rows at sampling.
# 4: a labelled learned model is sampled with labels drawn from its training frequencies (was: its null label).
MEASURE_REVISION = 4
FLOORED = ("mode_swd", "swd", "mmd")


class BenchProblem(Protocol):
    """What the runner needs of a problem.

    Attributes:
        name: the ``problem`` column of the results.
        identity: a content hash of everything that defines the problem (the mixture's parameters and the SDE;
            a checkpoint's files), so a resumed or merged row is never one of another problem of the same name.
        dim: the number of coordinates of one sample.
        sde: the forward SDE the samplers run on (the one the score was built or trained for).
        primary: the headline metric (the summary table and the plot use it).
        metrics: every key :meth:`quality` returns; a failed run records them as nan.
    """

    name: str
    identity: str
    dim: int
    sde: SDE
    primary: str
    metrics: tuple[str, ...]

    def score(self, sde: SDE, timer: TimedModel | None = None) -> Score:
        """The score on ``sde``; with ``timer``, every model call goes through it."""

    def place(self, device: str, dtype: torch.dtype) -> None:
        """Put the problem's network (if any) on ``device`` in ``dtype`` (the exact scores follow their input)."""

    def shape(self, n: int) -> tuple[int, ...]:
        """The shape of a batch of ``n`` samples."""

    def quality(self, x: torch.Tensor, sde: SDE, t_end: float, seed: int) -> dict:
        """Every metric of samples ``x`` against the law they target at ``t_end``; reference draws from ``seed``."""

    def floors(self, sde: SDE, t_end: float, n: int, seeds: int) -> dict:
        """``<metric>_floor`` and ``<metric>_floor_std``: the metric between independent exact sets of size ``n``."""


class ExactProblem:
    """A built-in Gaussian mixture with its exact score, on the linear VP SDE unless ``sde`` is given."""

    primary = "mode_swd"
    metrics = METRICS

    def __init__(self, name: str, mixture: GaussianMixture | None = None, sde: SDE | None = None):
        self.name = name
        self.mixture = get_problem(name) if mixture is None else mixture
        self.dim = self.mixture.dim
        self.sde = VPSDE() if sde is None else sde
        h = hashlib.sha256(repr(self.sde).encode())
        for t in (self.mixture.means, self.mixture.covs, self.mixture.weights):
            h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
        self.identity = "exact:" + h.hexdigest()

    def score(self, sde: SDE, timer: TimedModel | None = None) -> EpsilonScore:
        """The exact score; with ``timer``, every model call is timed by it."""
        model = self.mixture.eps_model(sde)
        if timer is not None:
            timer.model, model = model, timer
        return EpsilonScore(model, sde)

    def velocity_score(self, sde: SDE, timer: TimedModel | None = None) -> FlowVelocityScore:
        """The exact velocity ``eps - x0`` as a score (finite at the flow path's pure-noise end, ``t = 1``)."""
        model = self.mixture.velocity_model(sde)
        if timer is not None:
            timer.model, model = model, timer
        return FlowVelocityScore(model, sde)

    def place(self, device: str, dtype: torch.dtype) -> None:
        """Nothing to move: the exact score computes in float64 on its input's device."""

    def target(self, sde: SDE, t: float) -> GaussianMixture:
        """The exact law ``p_t`` (the data's mixture at ``t <= 0``)."""
        return self.mixture if t <= 0 else self.mixture.marginal(sde, t)

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, self.dim)

    def bandwidth(self, sde: SDE, t_end: float) -> float:
        """The MMD kernel's bandwidth at ``t_end``: the median pairwise distance of 2,000 exact draws (seed 0),
        one kernel for every run and floor of this target (computed once per ``t_end``)."""
        key = (repr(sde), round(float(t_end), 12))
        cache = self.__dict__.setdefault("_bandwidths", {})
        if key not in cache:
            ref = self.target(sde, t_end).sample(2000, generator=torch.Generator().manual_seed(0))
            cache[key] = median_bandwidth(ref)
        return cache[key]

    def quality(self, x: torch.Tensor, sde: SDE, t_end: float, seed: int) -> dict:
        return quality(x, self.target(sde, t_end), seed, self.bandwidth(sde, t_end))

    def floors(self, sde: SDE, t_end: float, n: int, seeds: int) -> dict:
        return floors(self.target(sde, t_end), n, seeds, self.bandwidth(sde, t_end))


class LearnedProblem:
    """A trained checkpoint (``scoresde train``) scored against fresh data of its dataset, noised to ``t_end``.

    The law a sampler targets at ``t_end`` is the data's marginal ``p_{t_end}``; the reference draws are data
    pushed through the closed-form forward kernel to ``t_end`` with a seeded generator. 2-D sets: ``tv``
    (primary: the histogram total variation of :func:`scoresde.metrics.histogram_tv`, 48 x 48 cells, which tells
    sharp edges from blurred ones where the global SWD varies 20% between exact draws), ``swd`` and ``mmd``
    against fresh draws of the toy generator (new seeds, never the training draw), with their floor between two
    fresh sets of the same size. Digits: ``fd``, the Frechet distance of the
    package's digit-classifier features to the test split (:mod:`scoresde.models.classifier`); its floor is
    the FD of the test split to the train split (both noised the same way), so ``n`` should be the train
    split's size, 1,437. MNIST: ``fd`` on the MNIST judge's features (:mod:`scoresde.models.mnist_judge`) to the
    whole test split; its floor is ``n`` train images drawn at random against it (both noised the same way).
    A mixture set (:data:`scoresde.data.MIXTURE_SETS`): the exact problem it was drawn from scores it (its law at
    ``t_end``, the mode-conditional SWD and the other figures of :class:`ExactProblem`, its exact floors).

    ``directory`` may name a shipped model (``"mnist"``, :func:`scoresde.train.resolve_checkpoint`). A labelled
    (class- or cluster-conditional) model is sampled for its data's law: each sample's label drawn from the
    training frequencies (:func:`scoresde.train.draw_labels`, seed ``label_seed``, by sample index), as
    ``scoresde sample --label prior`` does; a checkpoint without label frequencies, through its null label.
    """

    label_seed = 0

    def __init__(self, directory: str):
        from ..train import build_sde
        from ..train.pretrained import load_network
        from ..train.shipped import resolve_checkpoint

        self.directory = str(resolve_checkpoint(directory))
        self.config, self.model, ckpt = load_network(self.directory, True, "cpu")
        self.sde = build_sde(self.config.sde)
        self.identity = "checkpoint:" + checkpoint_digest(self.directory)
        self.name = f"learned:{Path(directory).name}"
        self.data = self.config.data
        self.sample_shape = data_mod.dataset_info(self.data)["shape"]
        self.dim = math.prod(self.sample_shape)
        self.metrics = ("fd",) if self.data in _FD_JUDGES else ("tv", "swd", "mmd")
        self.primary = self.metrics[0]
        self.exact = None  # a mixture set's exact problem: its law, metrics and floors are the bench's own
        if self.data in data_mod.MIXTURE_SETS:
            self.exact = ExactProblem(data_mod.MIXTURE_SETS[self.data], sde=self.sde)
            self.metrics, self.primary = self.exact.metrics, self.exact.primary
        labelled = getattr(self.model, "num_classes", None) is not None
        self.label_counts = ckpt.extra.get("label_counts") if labelled else None

    def score(self, sde: SDE, timer: TimedModel | None = None) -> Score:
        from ..train import make_score

        model = self.model
        if self.label_counts is not None:
            model = _PriorLabels(model, self.label_counts, self.label_seed)
        if timer is not None:
            timer.model, model = model, timer
        return make_score(model, sde, self.config.prediction)

    def shape(self, n: int) -> tuple[int, ...]:
        return (n, *self.sample_shape)

    def place(self, device: str, dtype: torch.dtype) -> None:
        """The network on ``device`` in ``dtype`` (float32 for a bfloat16 run: autocast lowers it)."""
        self.model.to(device=device, dtype=dtype)

    def _reference(self, sde: SDE, t_end: float, n: int, seed: int, split: str = "test") -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.data == "digits":
            x = data_mod.digits(split, seed=self.config.data_seed)[0].double()
        elif self.data == "mnist":  # the whole test split; n train images drawn at random (the split is ordered)
            x = data_mod.mnist(split)[0]
            if split == "train":
                x = x[torch.randperm(x.shape[0], generator=g)[:n]]
            x = x.double()
        else:  # fresh draws, on seeds the training data (seed 2 * data_seed) never uses
            x = data_mod.toy_2d(self.data, n, seed=2 * (10_000 + seed) + 1).double()
        if t_end <= 0:
            return x
        c = sde.coefs(t_end)
        a, s = c.alpha, c.sigma
        return a * x + s * torch.randn(x.shape, generator=g, dtype=x.dtype)

    def quality(self, x: torch.Tensor, sde: SDE, t_end: float, seed: int) -> dict:
        if self.exact is not None:
            return self.exact.quality(x, sde, t_end, seed)
        x = x.double()
        if self.data in _FD_JUDGES:
            return {"fd": _FD_JUDGES[self.data]()(x.float(), self._reference(sde, t_end, x.shape[0], seed).float())}
        ref = self._reference(sde, t_end, x.shape[0], seed)
        key = (repr(sde), round(float(t_end), 12))
        cache = self.__dict__.setdefault("_bandwidths", {})
        if key not in cache:  # one kernel for every run and floor of this target (see ExactProblem.bandwidth)
            cache[key] = median_bandwidth(self._reference(sde, t_end, 2000, 0))
        return {
            "tv": histogram_tv(x, ref),
            "swd": sliced_wasserstein(x, ref),
            "mmd": mmd_rbf(x, ref, cache[key], max_n=2000, seed=seed),
        }

    def floors(self, sde: SDE, t_end: float, n: int, seeds: int) -> dict:
        if self.exact is not None:
            return self.exact.floors(sde, t_end, n, seeds)
        if self.data in _FD_JUDGES:
            fd = _FD_JUDGES[self.data]()
            vals = [
                fd(
                    self._reference(sde, t_end, n, 3_000 + s, "train").float(),
                    self._reference(sde, t_end, n, 4_000 + s).float(),
                )
                for s in range(seeds)
            ]
            v = torch.tensor(vals, dtype=torch.float64)
            return {"fd_floor": float(v.mean()), "fd_floor_std": float(v.std()) if seeds > 1 else 0.0}
        rows = [self.quality(self._reference(sde, t_end, n, 5_000 + s), sde, t_end, 6_000 + s) for s in range(seeds)]
        return _mean_std(rows, self.metrics)


def _digit_fd():
    from ..models.classifier import digit_fd

    return digit_fd


def _mnist_fd():
    from ..models.mnist_judge import mnist_fd

    return mnist_fd


_FD_JUDGES = {"digits": _digit_fd, "mnist": _mnist_fd}  # FD on a classifier's features: each image set's judge


class _PriorLabels:
    """``model(x, t)`` with sample ``i``'s label drawn from the training frequencies: ``draw_labels(counts, batch,
    seed)`` (it depends on ``(seed, i)`` only), drawn once per batch size."""

    def __init__(self, model, counts: list[int], seed: int):
        self.model, self.counts, self.seed, self.num_classes, self._drawn = model, counts, seed, None, {}

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        from ..train import draw_labels

        n = x.shape[0]
        if n not in self._drawn:
            self._drawn[n] = draw_labels(self.counts, n, self.seed)
        return self.model(x, t, self._drawn[n].to(x.device))


def checkpoint_digest(directory: str | Path) -> str:
    """SHA-256 of a checkpoint's files: its sidecar and the data file it names (a retrained or other model differs)."""
    import json

    from ..checkpoint import SIDECAR

    directory = Path(directory)
    side = (directory / SIDECAR).read_bytes()
    h = hashlib.sha256(side)
    with open(directory / str(json.loads(side)["file"]), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_problem(name: str, sde: SDE | None = None) -> BenchProblem:
    """``"ring"``, ``"gmm16"``, ``"gmm64"``, ``"gmm-family:d=D,k=K,seed=S"``: an :class:`ExactProblem` on ``sde``
    (default the linear VP SDE); ``"learned:DIR"``: a :class:`LearnedProblem` (on its own SDE: ``sde`` must be
    ``None``).

    Raises ``ValueError`` naming the accepted values for an unknown name or a folder without a checkpoint.
    """
    from ..problems import PROBLEMS

    if name.startswith("learned:"):
        from ..checkpoint import has_checkpoint
        from ..train.shipped import resolve_checkpoint

        directory = name.split(":", 1)[1]
        if not directory or not has_checkpoint(resolve_checkpoint(directory)):
            raise ValueError(
                f"--problems: {name!r} names no checkpoint (learned:DIR needs a `scoresde train` folder or a shipped "
                "model's name: mnist)"
            )
        if sde is not None:
            raise ValueError(f"--sde: {name!r} samples the SDE it was trained on; --sde applies to exact problems")
        return LearnedProblem(directory)
    if name.startswith("gmm-family"):
        try:
            return ExactProblem(name, sde=sde)
        except ValueError as e:
            raise ValueError(f"--problems: {e}") from None
    if name not in PROBLEMS:
        raise ValueError(
            f"--problems: unknown problem {name!r}; accepted: {', '.join(PROBLEMS)}, gmm-family:d=D,k=K,seed=S, "
            "learned:DIR"
        )
    return ExactProblem(name, sde=sde)


def quality(x: torch.Tensor, target: GaussianMixture, seed: int, bandwidth: float | None = None) -> dict:
    """Every metric of ``x`` against the exact law ``target``; reference draws from ``seed``; ``bandwidth``: the
    MMD kernel's (default: the median heuristic on the pooled sets)."""
    g = torch.Generator().manual_seed(seed)
    labels = assign_modes(x, target)  # the exact mixture evaluation, shared by both per-mode metrics
    mode_swd, _ = mode_conditional_swd(x, target, g, labels=labels)
    diag = mode_diagnostics(x, target, labels=labels)
    ref = target.sample(x.shape[0], generator=g)
    return {
        "mode_swd": mode_swd,
        "weight_err": diag["max_weight_err"],
        "mean_err": diag["max_mean_err"],
        "cov_err": diag["max_cov_err"],
        "swd": sliced_wasserstein(x, ref),
        "mmd": mmd_rbf(x, ref, bandwidth, max_n=2000, seed=seed),
    }


def floors(target: GaussianMixture, n: int, seeds: int, bandwidth: float | None = None) -> dict:
    """Mean and std of every floored metric between independent exact sample sets of size ``n``."""
    rows = [
        quality(target.sample(n, generator=torch.Generator().manual_seed(1_000 + s)), target, 2_000 + s, bandwidth)
        for s in range(seeds)
    ]
    return _mean_std(rows, FLOORED)


def _mean_std(rows: list[dict], keys) -> dict:
    out = {}
    for key in keys:
        v = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        out[f"{key}_floor"], out[f"{key}_floor_std"] = float(v.mean()), float(v.std())
    return out
