"""The step-count vs quality benchmark (behind ``scoresde bench``): problems x methods x NFE budgets.

For each problem, method and budget, draw ``n`` samples from the prior at ``T`` down to the method's final
time and compare them with exact draws of the law it targets there (``p_{t_min}`` for ours; a peer may end
elsewhere, e.g. at its discrete ``alpha_bar_0``, and is compared with the exact law at that time):

- ``mode_swd``: mode-conditional sliced W2, the primary figure (see :mod:`scoresde.metrics`);
- ``weight_err``, ``mean_err``, ``cov_err``: the worst mode's weight, mean and relative covariance error;
- ``swd`` (global sliced W2) and ``mmd`` (unbiased RBF MMD^2), secondary;

each beside its floor: mean and std over seeds of the same statistic between exact sample sets of the
same size. Fixed-step methods get ``steps = budget // nfe_per_step``; adaptive ones run once per tolerance and
are placed at the NFE they counted, stopped (status ``over budget``) once they have spent the largest budget;
peers (``pip install scoresde[peers]``) get the budget and report what they counted. Every run records the
counted NFE, the wall time and the time spent inside the model. Methods fitted before they sample (``fitted``,
``name@optimized``) are fitted once per problem and step count, and their rows carry the fit's model calls
(``fit_evals``) and the NFE per sample with the fit amortised over ``n`` (``nfe_amortised``), which the
summary's budgets use. Members of a random family (``gmm-family:d=16,k=4,seed=100-109``) get a table of the
median and worst ratio to the floor over the members.

Each finished run is appended (and flushed) to ``<out>/bench_<tag>.partial.jsonl`` under a key that hashes
everything that determines it (the problem's content, e.g. a checkpoint's files; the method, its options and
grid; ``n``; ``seed``; the package version): a rerun skips the rows whose key is there, so an interrupted run
resumes, and redoes any whose inputs changed. Every argument, the plan and the output folder are checked
before any work. The final CSV, JSON and Markdown table merge with the rows already in ``<out>`` (a rerun
with other methods or problems keeps the earlier rows) and are written atomically before the PNG, whose
failure is a warning. A run without samples (a failed fit, a divergence, an adaptive run over budget) is said as
it happens and listed with its reason under the summary (:func:`~scoresde.bench.report.no_figure_table`); the
default fit budget is never below what the fit needs (:meth:`BenchConfig.fit_budget_for`).

Five parts, without an import cycle (each imports only those above it):

- :mod:`~scoresde.bench.config`: :class:`BenchConfig`, the quick grid, the problem names and the model timer
  (:class:`TimedModel`), the leaf the others share;
- :mod:`~scoresde.bench.problems`: where the score comes from and what samples are compared with, behind one
  interface (:class:`BenchProblem`): :class:`ExactProblem` (a built-in mixture, exact score) and
  :class:`LearnedProblem` (a trained checkpoint, ``"learned:DIR"``);
- :mod:`~scoresde.bench.report`: the result files, the tables and the summary;
- :mod:`~scoresde.bench.checks`: every argument checked before any work (:func:`validate`);
- :mod:`~scoresde.bench.runner`: the plan, resuming, one run, :func:`run_bench`.
"""

from .checks import validate
from .config import BenchConfig, TimedModel
from .problems import FLOORED, METRICS, BenchProblem, ExactProblem, LearnedProblem, floors, make_problem, quality
from .report import family_table, format_table, summary_table, write_results
from .runner import plan, row_key, run_bench

__all__ = [
    "BenchConfig",
    "BenchProblem",
    "ExactProblem",
    "LearnedProblem",
    "TimedModel",
    "make_problem",
    "plan",
    "run_bench",
    "validate",
    "row_key",
    "write_results",
    "format_table",
    "summary_table",
    "family_table",
    "quality",
    "floors",
    "METRICS",
    "FLOORED",
]
