"""The benchmark picture reads at a glance: the legend beside the panels, clean NFE ticks, ours and peers apart."""

import colorsys

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.colors import to_rgb  # noqa: E402

from scoresde.plot import nfe_quality_figure, nfe_ticks, plot_nfe_quality  # noqa: E402

BUDGETS = (5, 10, 20, 50, 100, 200)
OURS = ("fitted", "unipc", "unipc@optimized", "dpm++3m", "dpm++2m", "edm-heun", "ddim", "ddpm", "sde-euler", "ode-rk4")
PEERS = ("kdiff-lms", "kdiff-dpm_fast", "diffusers-unipc", "diffusers-unipc-karras", "diffusers-ddim")


def rows():
    out = []
    for problem, dim in (("ring", 2), ("gmm16", 16)):
        for i, method in enumerate(OURS + PEERS):
            for nfe in BUDGETS:
                out.append(
                    {
                        "problem": problem,
                        "dim": dim,
                        "n": 4000,
                        "method": method,
                        "source": "peer" if method in PEERS else "ours",
                        "run": f"budget={nfe}",
                        "nfe": nfe - (1 if method == "edm-heun" else 0),
                        "nfe_amortised": nfe + (2.0 if method == "fitted" else 0.0),
                        "mode_swd": 0.02 + (1 + i / 10) / nfe,
                        "mode_swd_floor": 0.02,
                        "mode_swd_floor_std": 0.002,
                    }
                )
    return out


def test_nfe_ticks_are_the_budgets_thinned_so_labels_cannot_collide():
    assert nfe_ticks(rows()) == list(BUDGETS)
    r = [{"run": f"budget={b}", "nfe": b} for b in (3, 4, 5, 10)]
    assert nfe_ticks(r) == [3, 4, 10]  # 5 is within a factor 1.3 of 4
    assert nfe_ticks([{"run": "tol=0.001", "nfe": 67}, {"run": "tol=0.01", "nfe": 91}]) == [67, 91]


@pytest.fixture(scope="module")
def drawn():
    import matplotlib.pyplot as plt

    fig = nfe_quality_figure(rows())
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def test_the_legend_lies_outside_every_panel(drawn):
    renderer = drawn.canvas.get_renderer()
    panels = [ax for ax in drawn.axes if ax.get_visible() and ax.axison]
    legends = [ax.get_legend() for ax in drawn.axes if ax.get_legend() is not None]
    assert len(panels) == 2 and len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    for ax in panels:
        assert ax.get_legend() is None
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"
    labels = [t.get_text() for t in legends[0].get_texts()]
    assert set(OURS) | set(PEERS) <= set(labels) and "two-sample floor" in labels


def test_x_ticks_sit_at_the_budgets_and_their_labels_do_not_overlap(drawn):
    renderer = drawn.canvas.get_renderer()
    for ax in (ax for ax in drawn.axes if ax.axison):
        assert list(ax.get_xticks()) == list(BUDGETS)
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert [t.get_text() for t in labels] == [str(b) for b in BUDGETS]
        assert not any(t.get_visible() and t.get_text() for t in ax.get_xticklabels(minor=True))
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), "x tick labels collide"


def _hue(colour) -> float:
    h, _, _ = colorsys.rgb_to_hls(*to_rgb(colour))
    return h * 360


def test_ours_and_peers_differ_by_colour_family_and_by_line_and_marker(drawn):
    for ax in (ax for ax in drawn.axes if ax.axison):
        lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
        assert set(lines) == set(OURS) | set(PEERS)
        for name, line in lines.items():
            r, g, b = to_rgb(line.get_color())
            grey = max(r, g, b) - min(r, g, b) < 0.05
            if name in PEERS:
                assert _hue(line.get_color()) <= 50 or _hue(line.get_color()) >= 340, f"{name}: a peer in a warm colour"
                assert line.get_linestyle() == "--" and line.get_markerfacecolor() == "white"
            else:
                assert grey or 120 <= _hue(line.get_color()) <= 300, f"{name}: ours in a cool colour (or grey)"
                assert line.get_linestyle() == "-" and line.get_markerfacecolor() != "white"


def test_plot_nfe_quality_writes_a_png(tmp_path):
    path = tmp_path / "bench.png"
    plot_nfe_quality(rows(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_nfe_quality([], tmp_path / "none.png")  # nothing to draw, nothing written
    assert not (tmp_path / "none.png").exists()
