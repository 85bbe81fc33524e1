"""The benchmark's report: the result files, the Markdown tables and the summary of the best runs.

:func:`write_results` writes ``<out>/bench_<tag>.{csv,json,md,png}`` atomically, the tables first; a rerun
into the same folder merges its rows with those already there (by each row's ``key``, see
:func:`~scoresde.bench.runner.row_key`), so a run with other methods or problems never drops earlier rows,
and a failure in the plot is reported (a warning) without losing the tables. The tables read only the
rows (dicts, as they come back from the JSON), never the problem objects: each row names its ``primary``
figure, and every ``<metric>`` has its ``<metric>_floor`` and ``<metric>_floor_std`` beside it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..util import atomic_write_text
from .config import family_of

if TYPE_CHECKING:
    from .config import BenchConfig

__all__ = [
    "write_results",
    "format_table",
    "summary_table",
    "family_table",
    "merge_rows",
    "unavailable_peers",
    "outcome",
    "OUTCOMES",
    "no_figure_table",
]

# What became of a run, read from its status: ``ok``; ``diverged`` and ``over budget`` (an adaptive run stopped
# once it had spent the largest NFE budget) are what the method earned there; ``failed`` (e.g. a fit that could
# not be made): the run was not made, nothing was measured.
OUTCOMES = ("ok", "diverged", "over budget", "failed")


def outcome(status: str) -> str:
    """One of :data:`OUTCOMES` for a row's ``status`` (``"fit failed: ..."`` and any other is ``"failed"``)."""
    head = str(status).split(":", 1)[0]
    return head if head in OUTCOMES else "failed"


def no_figure_table(rows: list[dict]) -> str:
    """The runs without a figure, each with its outcome and the reason its status gives; empty when every run gave
    samples. :func:`summary_table` ends with it, so the printed summary and the Markdown file name every one."""
    bad = [r for r in rows if outcome(r.get("status", "ok")) != "ok"]
    if not bad:
        return ""
    lines = [
        f"\n## Runs without a figure ({len(bad)} of {len(rows)}): `failed` ones could not be made; `diverged` and "
        "`over budget` (an adaptive method stopped at the largest NFE budget) are the method's result there\n",
        "| problem | method | run | NFE | outcome | reason |",
        "|---|---|---|---:|---|---|",
    ]
    for r in bad:
        what, reason = outcome(r["status"]), str(r["status"]).replace("|", "/").replace("\n", " ")
        reason = reason.removeprefix(f"{what}: ")
        lines.append(f"| {r['problem']} | {r['method']} | {r['run']} | {r['nfe']} | {what} | {reason} |")
    return "\n".join(lines) + "\n"


def merge_rows(previous: list[dict], rows: list[dict]) -> list[dict]:
    """``previous`` with each row of the same ``key`` as a new one replaced by it, then the other new rows.

    A previous row without a key (written by an older version) is kept unless a new row has its problem,
    method, run, ``n`` and seed: then it is the stale result of that run and the new row takes its place.
    """
    new = {r["key"]: r for r in rows if "key" in r}
    legacy = {(r["problem"], r["method"], r["run"], r.get("n"), r.get("seed")) for r in rows}
    merged, placed = [], set()
    for r in previous:
        if "key" in r:
            if r["key"] in new:
                merged.append(new[r["key"]])
                placed.add(r["key"])
            else:
                merged.append(r)
        elif (r.get("problem"), r.get("method"), r.get("run"), r.get("n"), r.get("seed")) not in legacy:
            merged.append(r)
    return merged + [r for r in rows if r.get("key") not in placed]


def previous_rows(path: Path) -> list[dict]:
    """The rows of an earlier result file at ``path`` (none if there is none); ``ValueError`` if it is not one."""
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text()).get("rows", [])
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"--out: {path} exists but is not a bench result file ({err}); move it away") from err
    return [r for r in rows if isinstance(r, dict) and {"problem", "method", "run"} <= set(r)]


def _labelled(rows: list[dict]) -> list[dict]:
    """Rows for the tables and the plot: rows of one problem name that come from different problems (e.g. two
    checkpoints called ``moons``: the first characters of their content hash) or sample sizes (``n = ...``) are
    labelled apart, so each table has one floor and no row reads as another experiment's."""
    ids: dict[str, set] = {}
    sizes: dict[str, set] = {}
    for r in rows:
        ids.setdefault(r["problem"], set()).add(r.get("problem_id"))
        sizes.setdefault(r["problem"], set()).add(r.get("n"))
    out = []
    for r in rows:
        name, tags = r["problem"], []
        if len(ids[name]) > 1:
            tags.append(str(r.get("problem_id") or "unknown").rpartition(":")[2][:8])
        if len(sizes[name]) > 1:
            tags.append(f"n = {r.get('n')}")
        out.append({**r, "problem": f"{name} [{', '.join(tags)}]"} if tags else r)
    return out


def unavailable_peers() -> dict[str, str]:
    """Peer libraries that failed to import, with the reason (empty where :mod:`scoresde.peers` cannot say)."""
    from .. import peers

    fn = getattr(peers, "unavailable", None)
    try:
        return dict(fn()) if callable(fn) else {}
    except Exception:  # a report never fails on this note
        return {}


def write_results(rows: list[dict], cfg: BenchConfig) -> list[dict]:
    """The CSV and JSON of every row, the Markdown summary and tables, and the NFE-quality plot.

    ``rows`` are merged into those already in ``<out>/bench_<tag>.json`` (:func:`merge_rows`); returns the
    merged rows. The plot comes last and a failure there is a warning, never a lost table.
    """
    out = Path(cfg.out)
    rows = merge_rows(previous_rows(out / f"bench_{cfg.tag}.json"), rows)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(out / f"bench_{cfg.tag}.csv", buf.getvalue())
    atomic_write_text(out / f"bench_{cfg.tag}.json", json.dumps({"config": asdict(cfg), "rows": rows}, indent=1))
    shown = _labelled(rows)
    budgets = sorted({*cfg.budgets, *(b for r in rows for b in _budget(r))})
    missing = unavailable_peers()
    note = ""
    if missing:
        note = "\nPeer libraries whose samplers were not run: " + "; ".join(f"{k} ({v})" for k, v in missing.items())
        note += "\n"
    atomic_write_text(out / f"bench_{cfg.tag}.md", summary_table(shown, budgets) + note + "\n" + format_table(shown))
    from ..plot import plot_nfe_quality

    png = out / f"bench_{cfg.tag}.png"
    try:
        plot_nfe_quality(shown, png)
    except Exception as err:  # the tables are written; a figure is never worth losing them
        warnings.warn(f"the plot {png} was not written ({type(err).__name__}: {err}); the tables are", stacklevel=2)
    return rows


def _budget(row: dict) -> list[int]:
    run = str(row.get("run", ""))
    return [int(run.split("=", 1)[1])] if run.startswith("budget=") and run.split("=", 1)[1].isdigit() else []


def _fmt(v: float, spec: str = ".4f") -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_table(rows: list[dict]) -> str:
    """A Markdown table per problem: one line per run, the primary figure beside its floor."""
    lines = []
    for pname in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == pname]
        mixture = sub[0].get("primary", "mode_swd") == "mode_swd"
        lines += _mixture_table(sub) if mixture else _learned_table(sub)
    return "\n".join(lines) + "\n"


def _mixture_table(sub: list[dict]) -> list[str]:
    """The rows of an exact mixture: mode-conditional SWD and its ratio to the floor, the per-mode errors."""
    r0 = sub[0]
    lines = [
        f"\n### {r0['problem']} (d = {r0['dim']}, n = {r0['n']}): mode-conditional SWD floor "
        f"{r0['mode_swd_floor']:.4f} +- {r0['mode_swd_floor_std']:.4f}, global SWD floor "
        f"{r0['swd_floor']:.4f} +- {r0['swd_floor_std']:.4f}, "
        f"MMD^2 floor {r0['mmd_floor']:.1e} +- {r0['mmd_floor_std']:.1e}\n",
        "| method | run | steps | NFE | mode SWD | / floor | weight err | mean err | cov err | SWD | MMD^2 "
        "| wall s | model s | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sub:
        ratio = r["mode_swd"] / r["mode_swd_floor"] if r["mode_swd_floor"] > 0 else math.nan
        lines.append(
            f"| {r['method']} | {r['run']} | {r['steps']} | {_nfe_cell(r)} | {_fmt(r['mode_swd'])} | "
            f"{_fmt(ratio, '.2f')} | "
            f"{_fmt(r['weight_err'])} | {_fmt(r['mean_err'])} | {_fmt(r['cov_err'], '.3f')} | {_fmt(r['swd'])} | "
            f"{_fmt(r['mmd'], '.1e')} | {r['wall_s']:.2f} | {r['model_s']:.2f} | {r['status'][:40]} |"
        )
    return lines


# The unbiased MMD^2 of two draws of one law has mean 0 (its floor is often negative), so a ratio to it means
# nothing: the column says how many of the floor's standard deviations a method's MMD^2 lies above the floor.
_LEARNED_RATIO = {"mmd": "(- floor) / floor std"}


def _learned_ratio(r: dict, k: str) -> float:
    f = r[f"{k}_floor"]
    if k == "mmd":
        sd = r.get(f"{k}_floor_std")
        return (r[k] - f) / sd if sd and sd > 0 else math.nan
    return r[k] / f if f > 0 else math.nan


def _learned_table(sub: list[dict]) -> list[str]:
    """The rows of a learned model: each of its metrics (fd, or swd and mmd) and its ratio to the floor."""
    r0 = sub[0]
    keys = [k for k in ("fd", "tv", "swd", "mmd") if k in r0]
    floors_txt = ", ".join(f"{k} floor {r0[f'{k}_floor']:.4g} +- {r0[f'{k}_floor_std']:.2g}" for k in keys)
    lines = [
        f"\n### {r0['problem']} (d = {r0['dim']}, n = {r0['n']}): {floors_txt}\n",
        "| method | run | steps | NFE | "
        + " | ".join(f"{k} | {_LEARNED_RATIO.get(k, '/ floor')}" for k in keys)
        + " | wall s | model s | status |",
        "|---|---|---:|---:|" + "---:|---:|" * len(keys) + "---:|---:|---|",
    ]
    for r in sub:
        cells = []
        for k in keys:
            cells += [_fmt(r[k], ".4g"), _fmt(_learned_ratio(r, k), ".2f")]
        lines.append(
            f"| {r['method']} | {r['run']} | {r['steps']} | {_nfe_cell(r)} | {' | '.join(cells)} | "
            f"{r['wall_s']:.2f} | {r['model_s']:.2f} | {r['status'][:40]} |"
        )
    return lines


def _amortised(row: dict) -> float:
    """The NFE per sample with the fit's model calls spread over the run's samples (``nfe`` for rows without a fit
    and for rows written before fits were counted)."""
    v = row.get("nfe_amortised")
    return float(row["nfe"]) if v in (None, "") else float(v)


def _needs_fit(row: dict) -> bool:
    return bool(row.get("fit_evals")) or "@optimized" in str(row["method"])


def _nfe_cell(row: dict) -> str:
    if not row.get("fit_evals"):
        return f"{row['nfe']}"
    return f"{row['nfe']} + {row['fit_evals'] / row['n']:.2f} fit = {_amortised(row):.2f}"


def _best(rows: list[dict], key: str, budget: float, keep) -> dict | None:
    cand = [r for r in rows if keep(r) and _amortised(r) <= budget and not math.isnan(r[key])]
    return min(cand, key=lambda r: r[key]) if cand else None


def summary_table(rows: list[dict], budgets) -> str:
    """Per problem and NFE budget: our best method, our best that needs no fit, the best peer, and the ratio of
    ours to the peer's distance (< 1: ours is better).

    A run counts towards a budget when its NFE per sample *with its fit amortised* (``nfe_amortised``: the fit's
    model calls, teacher or pilot included, spread over the run's ``n`` samples) is at most the budget. The last
    columns show the ``fitted`` run whose NFE per sample is the budget, with its amortised NFE beside it.
    """
    lines = [
        "## Best at each NFE budget (primary figure: mode-conditional SWD for mixtures, FD for digits, histogram "
        "TV for 2-D learned; ratio = ours / best peer, < 1 means ours is better). Fitted methods (`fitted`, "
        "`name@optimized`) count the fit: NFE per sample + fit calls per sample of the run = amortised NFE, "
        "and the budget applies to the amortised figure\n",
        "| problem | NFE <= | ours: method (NFE) | primary / floor | ours, no fit: method (NFE) | primary / floor "
        "| peer: method (NFE) | primary / floor | ratio | ratio, no fit | fitted at this NFE per sample "
        "(amortised NFE) | primary / floor |",
        "|---|---:|---|---:|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for pname in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == pname]
        key = sub[0].get("primary", "mode_swd")
        for b in budgets:
            o = _best(sub, key, b, lambda r: r["source"] == "ours")
            nf = _best(sub, key, b, lambda r: r["source"] == "ours" and not _needs_fit(r))
            p = _best(sub, key, b, lambda r: r["source"] == "peer")

            def cell(r, key=key):
                if r is None:
                    return "-", "-"
                return f"{r['method']} ({_nfe_cell(r)})", f"{r[key]:.4f} / {r[key] / r[f'{key}_floor']:.2f}x"

            ratio = _fmt(o[key] / p[key], ".2f") if (o and p) else "-"
            ratio_nf = _fmt(nf[key] / p[key], ".2f") if (nf and p) else "-"
            fitted = [r for r in sub if r["method"] == "fitted" and r["nfe"] == b and not math.isnan(r[key])]
            lines.append(
                f"| {pname} | {b} | {' | '.join(cell(o))} | {' | '.join(cell(nf))} | {' | '.join(cell(p))} "
                f"| {ratio} | {ratio_nf} | {' | '.join(cell(fitted[0] if fitted else None))} |"
            )
    return "\n".join(lines) + "\n" + no_figure_table(rows) + family_table(rows, budgets)


def family_table(rows: list[dict], budgets) -> str:
    """For members of a random family (``gmm-family:...,seed=S``, two or more seeds in the rows): per budget, the
    median and worst ratio to the floor over the members of our best method, our best without a fit and the
    best peer, each method ranked by its median (a method counts when it has an eligible run on every member;
    budgets as in :func:`summary_table`). Empty when the rows hold no family."""

    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(r["problem"] for r in rows):
        fam = family_of(name)
        if fam is not None:
            groups.setdefault(fam, []).append(name)
    lines = []
    for fam, members in groups.items():
        if len(members) < 2:
            continue
        lines += [
            f"\n## {fam}: {len(members)} members (median / worst ratio to the floor over the members)\n",
            "| NFE <= | ours: method | median / worst | ours, no fit: method | median / worst "
            "| peer: method | median / worst | fitted at this NFE per sample (amortised NFE) | median / worst |",
            "|---:|---|---:|---|---:|---|---:|---|---:|",
        ]
        for b in budgets:
            cells = []
            for keep in (
                lambda r: r["source"] == "ours",
                lambda r: r["source"] == "ours" and not _needs_fit(r),
                lambda r: r["source"] == "peer",
            ):
                stats = _family_stats(rows, members, b, keep)
                if not stats:
                    cells += ["-", "-"]
                    continue
                method, (med, worst) = min(stats.items(), key=lambda kv: kv[1][0])
                cells += [method, f"{med:.2f} / {worst:.2f}"]
            fitted = [r for r in rows if r["problem"] in members and r["method"] == "fitted" and r["nfe"] == b]
            stats = _family_stats(fitted, members, math.inf, lambda r: True)
            if stats:
                med, worst = stats["fitted"]
                cells += [
                    f"fitted ({b} + {max(_amortised(r) for r in fitted) - b:.2f} fit)",
                    f"{med:.2f} / {worst:.2f}",
                ]
            else:
                cells += ["-", "-"]
            lines.append(f"| {b} | {' | '.join(cells)} |")
    return "\n".join(lines) + ("\n" if lines else "")


def _family_stats(rows, members, budget, keep) -> dict[str, tuple[float, float]]:
    """Per method: (median, worst) over ``members`` of its best eligible run's ratio to the floor."""
    per: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["problem"] not in members or not keep(r) or _amortised(r) > budget:
            continue
        key = r.get("primary", "mode_swd")
        if math.isnan(r[key]) or not r[f"{key}_floor"] > 0:
            continue
        ratio = r[key] / r[f"{key}_floor"]
        best = per.setdefault(r["method"], {})
        best[r["problem"]] = min(best.get(r["problem"], math.inf), ratio)
    out = {}
    for method, by in per.items():
        if len(by) == len(members):
            vals = sorted(by.values())
            out[method] = (statistics.median(vals), vals[-1])
    return out
