"""Forward SDEs with linear drift, ``dx = f(t) x dt + g(t) dW``, and their closed-form marginals.

Every SDE here has a Gaussian transition kernel (Song et al. 2021, eq. 29 and appendix B)::

    x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I),   alpha(t) = exp(int_0^t f),
    sigma(t)^2 = alpha(t)^2 int_0^t g(s)^2 / alpha(s)^2 ds,

so ``alpha_bar = alpha^2``, ``marginal_std = sigma`` and ``log_snr = log(alpha^2 / sigma^2)``. A subclass
gives ``log_alpha``, ``marginal_std``, ``beta``-like coefficients and the inverse of ``log_snr``; the
base class derives the rest. Time functions accept a float or a tensor and return a tensor (float64 for
a float argument, so that solvers can do their time arithmetic in double precision).

Layout: :mod:`.base` (:class:`SDE`, :class:`Coefs`), :mod:`.vp` (VP, sub-VP, discrete VP, the cosine chain),
:mod:`.ve`, :mod:`.flow`; every name is importable from here.
"""

from .base import SDE, Coefs, append_dims
from .flow import FlowSDE
from .ve import VESDE
from .vp import VPSDE, DiscreteVPSDE, SubVPSDE, cosine_betas

__all__ = ["SDE", "Coefs", "VPSDE", "SubVPSDE", "VESDE", "FlowSDE", "DiscreteVPSDE", "cosine_betas", "append_dims"]
