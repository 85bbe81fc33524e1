"""The plotted fields are the mathematics (exact score, PF-ODE and reverse-SDE drifts); the figures and `scoresde
fields` write real PNG / GIF files and refuse bad input in one line."""

import math

import pytest
import torch

import scoresde as sd
from scoresde import plot
from scoresde.cli import main

PNG, GIF = b"\x89PNG\r\n\x1a\n", b"GIF89a"


@pytest.fixture(scope="module")
def ring():
    return sd.get_problem("ring")


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VPSDE(schedule="cosine"), sd.SubVPSDE(), sd.VESDE()], ids=repr)
@pytest.mark.parametrize("t", [0.05, 0.5, 1.0])
def test_the_fields_are_the_exact_score_and_the_drifts_of_song_et_al(ring, sde, t):
    t = min(t, sde.T - 1e-2)  # near the cosine schedule's T, f is steep for a finite difference
    _, _, pts = plot.field_grid(4.0, 9, dtype=torch.float64)
    score = ring.score_fn(pts, t, sde)
    # by hand, independently of Coefs: f = d log alpha / dt (central difference), g^2 from the SDE
    h = 1e-5
    f = (float(sde.log_alpha(t + h)) - float(sde.log_alpha(t - h))) / (2 * h)
    g2 = float(sde.diffusion(t)) ** 2
    torch.testing.assert_close(plot.vector_field(ring, t, pts, "score", sde), score)
    for kind, weight in (("pf-drift", g2 / 2), ("sde-drift", g2)):
        want = f * pts - weight * score
        scale = float((f * pts).abs().max() + (weight * score).abs().max())  # f x and g^2 s nearly cancel
        torch.testing.assert_close(plot.vector_field(ring, t, pts, kind, sde), want, rtol=0, atol=1e-6 * scale)


def test_the_score_of_a_gaussian_points_to_its_mean():
    """N(m, v I) under VP: p_t = N(alpha m, (alpha^2 v + sigma^2) I), score = -(x - alpha m) / var, in closed form."""
    sde, t = sd.VPSDE(), 0.3
    m = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    g = sd.GaussianMixture(m, torch.tensor([0.5], dtype=torch.float64))
    _, _, pts = plot.field_grid(3.0, 7, dtype=torch.float64)
    a, s = float(sde.alpha(t)), float(sde.marginal_std(t))
    want = -(pts - a * m) / (a**2 * 0.5 + s**2)
    torch.testing.assert_close(plot.vector_field(g, t, pts, "score", sde), want)


def test_a_learned_score_is_evaluated_through_its_parameterisation(ring):
    """An EpsilonScore around the exact eps model gives the exact field; a perturbed one has a non-zero error."""
    sde = sd.VPSDE()
    _, _, pts = plot.field_grid(4.0, 11, dtype=torch.float64)
    exact_eps = ring.eps_model(sde)
    same = sd.EpsilonScore(exact_eps, sde)
    off = sd.EpsilonScore(lambda x, t: exact_eps(x, t) + 0.1, sde)
    assert float(plot.field_error(same, ring, 0.2, pts, "pf-drift", sde).max()) < 1e-10
    assert float(plot.field_error(off, ring, 0.2, pts, "pf-drift", sde).mean()) > 1e-2


def test_the_grid_layout_is_the_one_streamplot_expects():
    xs, ys, pts = plot.field_grid(2.0, 5)
    grid = pts.reshape(5, 5, 2)
    assert grid[1, 3, 0] == xs[3] and grid[1, 3, 1] == ys[1]
    with pytest.raises(ValueError, match="n >= 2"):
        plot.field_grid(2.0, 1)
    with pytest.raises(ValueError, match="kind must be one of"):
        plot.vector_field(sd.get_problem("ring"), 0.5, pts, "curl", sd.VPSDE())


def test_trajectories_come_from_the_callback_and_end_at_the_samples(ring):
    sde = sd.VPSDE()
    x = sde.prior_sample((6, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    times, path, out = plot.record_trajectory(ring.score(sde), x, "ddim", 7, seed=0)
    assert path.shape == (8, 6, 2) and times.shape == (8,)
    assert torch.equal(path[0], x) and torch.equal(path[-1], out.x)
    assert math.isclose(times[0], sde.T) and math.isclose(times[-1], sde.t_min) and (times.diff() < 0).all()


def test_figures_are_written(ring, tmp_path):
    sde = sd.VPSDE()
    fig = plot.plot_fields(ring, sde, [0.1, 1.0], "pf-drift", n=12)
    assert len(fig.axes) == 2
    plot.save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG
    learned = sd.EpsilonScore(lambda x, t: ring.eps_model(sde)(x, t) * 1.05, sde)
    plot.save_figure(plot.plot_field_error(learned, ring, sde, [0.1, 0.5], n=10), tmp_path / "e.png")
    plot.save_figure(plot.plot_forward(ring, sde, [0.0, 0.5], n=200, steps=20), tmp_path / "fw.png")
    plot.save_figure(plot.plot_schedules({"vp": sde, "cosine": sd.VPSDE(schedule="cosine")}), tmp_path / "s.png")
    gif = plot.animate_fields(ring, sde, [1.0, 0.3, 0.05], tmp_path / "a.gif", n=10)
    assert gif.read_bytes()[:6] == GIF
    for name in ("e.png", "fw.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_the_simulated_forward_process_matches_the_closed_form_marginal():
    """Euler-Maruyama from a point mass: mean alpha x0 and std sigma, to within sampling error (4000 draws)."""
    sde = sd.VPSDE()
    x0 = torch.full((4000, 2), 2.0, dtype=torch.float64)
    xt = plot.simulate_forward(sde, x0, [0.3, 1.0], steps=400, generator=torch.Generator().manual_seed(1))
    for x, t in zip(xt, (0.3, 1.0), strict=True):
        a, s = float(sde.alpha(t)), float(sde.marginal_std(t))
        assert abs(float(x.mean()) - 2 * a) < 4 * s / math.sqrt(8000) + 0.01
        assert abs(float(x.std()) - s) < 0.03


def test_a_data_overlay_is_drawn_on_every_panel_with_the_axes_on_the_outer_ones(ring):
    """Issue 32: a learned 2-D model's fields were drawn without axes or its data; the data now lie over every panel
    (one scatter each) and the outer panels carry tick labels."""
    from matplotlib.collections import PathCollection

    sde = sd.VPSDE()
    pts = sd.data.toy_2d("moons", 300, seed=0)
    fig = plot.plot_fields({"a": ring, "b": ring}, sde, [0.1, 1.0], n=8, data=pts, lim=plot.data_extent(pts))
    axes = fig.axes
    assert len(axes) == 4
    for ax in axes:
        scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(scatters) == 1 and scatters[0].get_offsets().shape == (300, 2)
        assert len(ax.get_xticks()) > 0 and len(ax.get_yticks()) > 0
    labelled = [(ax.xaxis.get_tick_params()["labelbottom"], ax.yaxis.get_tick_params()["labelleft"]) for ax in axes]
    assert labelled == [(False, True), (False, False), (True, True), (True, False)]


def test_data_extent_holds_the_data_and_is_not_the_exact_problems_4_5():
    pts = sd.data.toy_2d("moons", 2000, seed=0)
    lim = plot.data_extent(pts)
    assert (pts.abs() <= lim).float().mean() > 0.995
    assert lim < 3.5  # standardised moons lie within about 2.2: the old default 4.5 drew them in a quarter of the panel
    assert plot.data_extent(torch.tensor([[0.5, -1.0]])) == pytest.approx(1.2)


def test_cli_fields_writes_the_png_and_the_gif_and_never_overwrites(tmp_path, capsys):
    out, gif = tmp_path / "f.png", tmp_path / "f.gif"
    args = ["fields", "--t", "0.1,1", "--grid-size", "8", "--out", str(out), "--animate", str(gif), "--frames", "3"]
    assert main([*args, "--kind", "pf-drift"]) == 0
    assert out.read_bytes()[:8] == PNG and gif.read_bytes()[:6] == GIF
    out.write_bytes(b"mine")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and "--force" in err and "\n" not in err and out.read_bytes() == b"mine"
    assert main([*args, "--force"]) == 0 and out.read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--t", "0,0.5"], "--t"),
        (["--t", "0.5,1.5"], "--t"),
        (["--t", "abc"], "--t"),
        (["--kind", "curl"], "--kind"),
        (["--problem", "gmm16"], "--problem"),
        (["--problem", "nope"], "--problem"),
        (["--problem", "ring", "--checkpoint", "x"], "--checkpoint"),
        (["--checkpoint", "/no/such/dir"], "--checkpoint"),
        (["--out", "f.jpg2"], "--out"),
        (["--animate", "f.mp4"], "--animate"),
        (["--grid-size", "1"], "--grid-size"),
        (["--lim", "0"], "--lim"),
    ],
)
def test_cli_fields_bad_flags_are_one_line_exit_2(tmp_path, capsys, argv, flag):
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "f.png")]
    rc = main(["fields", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and flag in err and "Traceback" not in err, err
    assert not (tmp_path / "f.png").exists()


def test_cli_fields_of_a_trained_2d_model(tmp_path, capsys, moons_ckpt):
    ckpt = moons_ckpt
    out = tmp_path / "m.png"
    assert main(["fields", "--checkpoint", str(ckpt), "--t", "0.5", "--grid-size", "8", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
