"""The measured training recipes: one table behind ``scoresde train``'s defaults, the docs' figures and
``benchmarks/learned.py``.

A recipe is the settings of a :class:`~scoresde.train.TrainConfig` that reached a figure the docs report, with
that figure and the training throughput measured for it. ``scoresde train --data checkerboard`` with no other
flag trains :func:`recipe` ``("checkerboard")``; explicit flags (and a ``--config`` file) override single
fields, and the saved ``config.json`` records every value the run used. In Python::

    cfg = sd.train.recipe("checkerboard").config(out="runs/cb")        # the recipe
    cfg = sd.train.recipe("digits", class_conditional=True).config(steps=2000, out="runs/d")  # one field changed

``TrainConfig(...)`` itself keeps its plain defaults (a small, quick run), which tests and scripts rely on.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .. import data as data_mod
from ..precision import fast_bfloat16
from .config import TrainConfig

__all__ = ["Recipe", "RECIPES", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """A measured training recipe.

    Attributes:
        name: the table's key.
        settings: the :class:`TrainConfig` fields it sets (the rest keep their defaults); ``data`` is filled in by
            :func:`recipe` for recipes that serve several data sets.
        quality: the figure the docs report for it, and where.
        examples_per_s: training throughput measured for it, ``{(threads, dtype): examples/s}`` (an idle 2-core
            AMD EPYC, ``benchmarks/train_throughput.py``; docs/guides/training.md).
        sample_hint: how to sample a model it trains, as the docs measured it.
    """

    name: str
    settings: dict
    quality: str
    examples_per_s: dict = field(default_factory=dict)
    sample_hint: str = ""

    def config(self, **overrides) -> TrainConfig:
        """The :class:`TrainConfig` of this recipe with ``overrides`` on top. Where the recipe trains in bfloat16
        and this CPU has no bfloat16 kernels (about 20x slower there, :func:`~scoresde.precision.fast_bfloat16`),
        float32 unless ``dtype`` is overridden."""
        kw = dict(self.settings)
        if kw.get("dtype") == "bfloat16" and "dtype" not in overrides and not _fast_bf16(overrides):
            kw["dtype"] = "float32"
        kw.update(overrides)
        return TrainConfig(**kw)

    def expected_seconds(self, cfg: TrainConfig, threads: int) -> float | None:
        """The wall time ``cfg`` should take at ``threads`` threads on an idle machine like the one the throughput
        was measured on (``None`` if that thread count and dtype were not measured, or the batch differs)."""
        rate = self.examples_per_s.get((min(threads, 2), cfg.dtype))
        if rate is None or cfg.batch_size != self.settings.get("batch_size"):
            return None
        return cfg.steps * cfg.batch_size / rate

    def describe(self, cfg: TrainConfig, threads: int) -> str:
        """Two lines for ``scoresde train`` to print before it starts: the recipe and what to expect."""
        secs = self.expected_seconds(cfg, threads)
        took = (
            "time not measured for these settings"
            if secs is None
            else f"about {_duration(secs)} on {threads} idle thread{'s' if threads > 1 else ''} ({cfg.dtype})"
        )
        head = (
            f"recipe {self.name!r}: {cfg.steps} steps of batch {cfg.batch_size}, lr {cfg.lr:g}, "
            f"{cfg.model.get('arch', 'default')} network, {cfg.dtype}; {took}"
        )
        return f"{head}\n  the docs report: {self.quality}" + (f"\n  {self.sample_hint}" if self.sample_hint else "")


def _fast_bf16(overrides: dict) -> bool:
    device = str(overrides.get("device", "cpu"))
    return fast_bfloat16("cuda" if device.startswith("cuda") else "cpu")


def _duration(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))} s" if seconds < 90 else f"{seconds / 60:.0f} min"


# The digits U-Net at base width 64 with EDM's noise levels moved up (log(sigma / alpha) ~ N(-0.4, 1.4^2)); the
# reasons and the equal-time variants are in docs/guides/training.md and benchmarks/learned.py.
_DIGITS = dict(
    data="digits",
    prediction="v",
    model={"arch": "unet", "base_channels": 64, "channel_mults": [1, 2], "num_res_blocks": 1},
    p_mean=-0.4,
    p_std=1.4,
    steps=8000,
    batch_size=128,
    lr=1e-3,
    warmup=200,
    dtype="bfloat16",
)
# measured for the width-64 unconditional model; the class-conditional one trains at the same rate within 5 %
_DIGITS_RATE = {(1, "float32"): 474, (2, "float32"): 826, (1, "bfloat16"): 657, (2, "bfloat16"): 980}

# MNIST: a U-Net on 2x2 patches (28x28 seen as 14x14x4: its first level costs a quarter of a plain U-Net's), levels
# 14x14 and 7x7 (attention), width 64; class-conditional with label dropout 0.1, so that one network gives the
# data's law (labels drawn from the training frequencies), guided samples and the null label. The reasons, the
# training curve and the equal-time variant are in docs/guides/training.md.
_MNIST = {
    **_DIGITS,  # v prediction, the moved-up noise levels, batch 128 at lr 1e-3, bfloat16
    "data": "mnist",
    "class_conditional": True,
    "p_uncond": 0.1,
    "model": {"arch": "unet", "base_channels": 64, "channel_mults": [1, 2], "num_res_blocks": 1, "patch_size": 2},
    "steps": 6000,
}

# The MLP recipe of the 2-D sets and the mixture sets: batch 1,024 at lr 2e-3, 256 Fourier features, bfloat16
# autocast, v prediction, 6,000 steps (6.1M examples).
_MLP = dict(
    n_train=100_000,
    prediction="v",
    model={"arch": "mlp", "fourier_features": 256, "fourier_scale": 0.5},
    steps=6000,
    batch_size=1024,
    lr=2e-3,
    warmup=200,
    dtype="bfloat16",
)

RECIPES: dict[str, Recipe] = {
    "2d": Recipe(
        "2d",
        _MLP,
        "checkerboard histogram TV 1.34x its floor at 50 NFE ending with the denoising step, 1.53x without "
        "(dpm++2m; held out: rings 1.22x), docs/guides/training.md, benchmarks/learned.py",
        {(1, "float32"): 13_116, (2, "float32"): 21_165, (1, "bfloat16"): 26_192, (2, "bfloat16"): 49_652},
        "sample it with `scoresde sample --checkpoint DIR --steps 50` (dpm++2m ending with the denoising step: "
        "1.31x through the command line, benchmarks/recipe_e2e.py)",
    ),
    # A 16-D Gaussian mixture (scoresde.data.MIXTURE_SETS): the 2-D recipe's network and schedule, the data's own
    # width; the bench scores it against the exact mixture (`scoresde bench --problems learned:DIR`).
    "mixture": Recipe(
        "mixture",
        _MLP,
        "mixture16: mode-conditional SWD 1.07x its exact floor at 20 NFE (unipc, n = 20,000), docs/guides/solvers.md",
        {},
        "sample it with `scoresde sample --checkpoint DIR --method unipc --steps 20` (the ODE, 1.07x; with stochastic "
        "steps below sigma / alpha = 0.3, `--option eta=0.5 --option eta_sigma_max=0.3`, 1.08x)",
    ),
    # Unconditional digits: conditioned on 20 k-means clusters of the pixels, sampled with each sample's cluster
    # drawn from the training frequencies (Bao et al. 2022).
    "digits": Recipe(
        "digits",
        {**_DIGITS, "clusters": 20},
        "digit-classifier FD 1.64x its floor at 50 NFE (mean of 3 sampling seeds), docs/guides/training.md",
        _DIGITS_RATE,
        "sample it with `scoresde sample --checkpoint DIR --label prior` (clusters drawn from the training "
        "frequencies)",
    ),
    "digits-class": Recipe(
        "digits-class",
        {**_DIGITS, "class_conditional": True, "p_uncond": 0.1},
        "guided (w = 1 in (0.28, 2]) FD 1.37x its floor at class accuracy 0.993, docs/guides/conditioning.md",
        _DIGITS_RATE,
        "sample it with `scoresde sample --checkpoint DIR --label all --guidance 1 --guidance-interval 0.28,2`",
    ),
    "mnist": Recipe(
        "mnist",
        _MNIST,
        "MNIST-judge FD 1.44x its floor at 50 NFE for its data's law with dpm++2m-sde (labels drawn from the "
        "training frequencies; n = 2,000; 2.44x with dpm++2m), guided (w = 1 in (0.28, 2]) 1.79x at class accuracy "
        "0.991, docs/guides/training.md",
        {(2, "bfloat16"): 220},
        "sample its data's law with `scoresde sample --checkpoint DIR --label prior --method dpm++2m-sde --steps 50`; "
        "a digit with `--label 3 --guidance 1 --guidance-interval 0.28,2`",
    ),
}


def recipe(data: str, class_conditional: bool = False) -> Recipe:
    """The recipe that trains ``data`` (one of :data:`scoresde.data.DATASETS`), with labels or without; a 2-D
    set's recipe has its ``data`` filled in."""
    if data in data_mod.TOY_SETS or data in data_mod.MIXTURE_SETS:  # one recipe per kind, its data filled in
        if class_conditional:
            raise ValueError(f"{data!r} has no labels; class_conditional needs an image set (digits)")
        base = RECIPES["2d" if data in data_mod.TOY_SETS else "mixture"]
        return dataclasses.replace(base, settings={"data": data, **base.settings})
    if data == "digits":
        return RECIPES["digits-class" if class_conditional else "digits"]
    if data == "mnist":  # one class-conditional network serves both: its data's law is sampled with drawn labels
        return RECIPES["mnist"]
    have = [*data_mod.TOY_SETS, *data_mod.MIXTURE_SETS, "digits", "mnist"]
    raise ValueError(
        f"no measured recipe for data {data!r} yet; recipes exist for {', '.join(have)} (train it with --recipe none "
        "and flags, or sd.TrainConfig(...))"
    )
