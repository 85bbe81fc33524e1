"""``sd.from_diffusers``: a diffusers UNet2DModel and its scheduler as a score, checked against diffusers' own loops.

A tiny randomly initialised ``UNet2DModel`` (no download) in float64; the start noise is shared. Its outputs
are not those of a trained model (the random eps network gives |x| of a few hundred at the end), so the
comparisons are relative to the largest entry. Tolerances are from measurement (diffusers 0.42):

- DDIM (eta = 0): diffusers keeps ``alphas_cumprod`` in float32, and its loop then differs from ours by at most
  6e-8 relative; with the scheduler's tensors promoted to float64 the two agree to 1e-14. Asserted: 1e-5 and 1e-10.
- DPM-Solver++ (2M): diffusers' step casts the state and its sigmas to float32, whatever the model's dtype;
  measured at most 2.5e-7 relative with ``solver_type="heun"`` (the phi_2 form, ours). Asserted: 2e-6.
  ``solver_type="midpoint"`` (the diffusers default, the paper's Alg. 2) is a different second-order method
  and differs by O(h^2), asserted too so the comparison can tell them apart.
"""

import types

import pytest
import torch

import scoresde as sd

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[peers]')")


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return model.double().eval()


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def diffusers_loop(unet, scheduler, x):
    with torch.no_grad():
        for ts in scheduler.timesteps:
            x = scheduler.step(unet(x, ts).sample, ts, x).prev_sample
    return x


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddim_reproduces_diffusers_ddim(unet, x_T, prediction_type):
    """diffusers' DDIM (``set_alpha_to_one=True``) ends with a step to alpha_bar = 1, i.e. ``x <- x0(x, t_last)``:
    our DDIM on the scheduler's timesteps mapped to t, with ``denoise=True``; same NFE."""
    for promote, tol in ((False, 1e-5), (True, 1e-10)):
        sch = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, prediction_type=prediction_type)
        sch.set_timesteps(10)
        if promote:
            sch.alphas_cumprod = sch.alphas_cumprod.double()
            sch.final_alpha_cumprod = sch.final_alpha_cumprod.double()
        ref = diffusers_loop(unet, sch, x_T.clone())
        score = sd.from_diffusers(unet, sch)
        assert (
            type(score).__name__
            == {"epsilon": "EpsilonScore", "v_prediction": "VScore", "sample": "DataScore"}[prediction_type]
        )
        grid = score.sde.timestep_to_t(sch.timesteps, score.sde.n)
        out = sd.sample(score, method="ddim", grid=grid, x_init=x_T, denoise=True)
        assert out.nfe == len(sch.timesteps) == 10
        assert rel(out.x, ref) < tol, (promote, rel(out.x, ref))
        if promote:  # without the final denoising step it is 1e5 times the tolerance off: the check can fail
            wrong = sd.sample(score, method="ddim", grid=grid, x_init=x_T)
            assert rel(wrong.x, ref) > 1e-6  # measured 7.6e-5 (the last step is from timestep 0)


def test_ddim_final_alpha_of_the_first_timestep(unet, x_T):
    """``set_alpha_to_one=False`` with ``steps_offset=1`` (Stable Diffusion's setting): the last step goes from
    timestep 1 to alpha_bar_0, i.e. to t = 1/n, the grid's end; no denoising step."""
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sch.alphas_cumprod = sch.alphas_cumprod.double()
    sch.final_alpha_cumprod = sch.final_alpha_cumprod.double()
    sch.set_timesteps(8)
    ref = diffusers_loop(unet, sch, x_T.clone())
    score = sd.from_diffusers(unet, sch)
    n = score.sde.n
    grid = torch.cat([score.sde.timestep_to_t(sch.timesteps, n), torch.tensor([1.0 / n], dtype=torch.float64)])
    out = sd.sample(score, method="ddim", grid=grid, x_init=x_T)
    assert out.nfe == 8 and rel(out.x, ref) < 1e-10


@pytest.mark.parametrize("steps", [5, 12])
def test_dpmpp2m_reproduces_diffusers_multistep(unet, x_T, steps):
    """diffusers' DPMSolverMultistep (dpmsolver++, order 2): first step first order, then 2M, and the last step
    first order to sigma = 0 (``final_sigmas_type="zero"``), i.e. ``x0``. Ours: dpm++2m on the mapped timesteps
    without its own lower-order final step, then ``denoise=True``."""
    kw = dict(num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True)
    sch = diffusers.DPMSolverMultistepScheduler(solver_type="heun", **kw)
    sch.set_timesteps(steps)
    ref = diffusers_loop(unet, sch, x_T.clone())
    score = sd.from_diffusers(unet, sch)
    grid = score.sde.timestep_to_t(sch.timesteps, score.sde.n)
    out = sd.sample(score, method="dpm++2m", grid=grid, x_init=x_T, denoise=True, lower_order_final=False)
    assert out.nfe == steps
    assert rel(out.x, ref) < 2e-6, rel(out.x, ref)
    mid = diffusers.DPMSolverMultistepScheduler(solver_type="midpoint", **kw)
    mid.set_timesteps(steps)
    assert rel(out.x, diffusers_loop(unet, mid, x_T.clone())) > 1e-3  # another method: told apart


@pytest.mark.parametrize("method", ["unipc", "dpm++3m"])
def test_fast_solvers_run_on_a_diffusers_model(unet, x_T, method):
    sch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    out = sd.sample(sd.from_diffusers(unet, sch), method=method, steps=6, x_init=x_T)
    assert out.nfe == 6 and out.x.shape == x_T.shape and torch.isfinite(out.x).all()


def test_config_alone_gives_the_same_sde(unet):
    sch = diffusers.DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False)
    a = sd.diffusers_sde(sch)
    b = sd.diffusers_sde(dict(sch.config))  # betas computed by diffusers from the config
    t = torch.linspace(0.001, 1, 50, dtype=torch.float64)
    assert a.n == b.n == 1000 and torch.allclose(a.alpha_bar(t), b.alpha_bar(t), rtol=0, atol=1e-15)
    knots = a.timestep_to_t(torch.arange(1000), 1000)
    assert torch.allclose(a.alpha_bar(knots), sch.alphas_cumprod.double(), rtol=1e-12, atol=0)


def test_refusals_name_the_reason(unet):
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        sd.from_diffusers(unet, {"prediction_type": "flow", "num_train_timesteps": 10, "trained_betas": [0.1] * 10})
    with pytest.raises(ValueError, match="clip_sample=True"):
        sd.from_diffusers(unet, diffusers.DDPMScheduler())  # clip_sample defaults to True there
    sd.from_diffusers(unet, diffusers.DDPMScheduler(), ignore_clip_sample=True)  # accepted when asked
    with pytest.raises(ValueError, match="no betas or alphas_cumprod"):
        sd.from_diffusers(unet, types.SimpleNamespace(config={"prediction_type": "epsilon"}))
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        sd.from_diffusers(unet, {"trained_betas": [0.1, 0.5, 1.0]})
    with pytest.raises(TypeError, match="config"):
        sd.from_diffusers(unet, 3)


def test_any_callable_model_and_learned_variance_halves():
    """A plain callable returning a tensor of twice the channels (``variance_type="learned_range"``): the first
    half is the prediction; timesteps arrive as integers on the knots."""
    seen = []

    def model(x, timestep):
        seen.append(timestep.clone())
        return (torch.cat([torch.zeros_like(x), torch.ones_like(x)], dim=1),)

    cfg = {"trained_betas": torch.linspace(1e-4, 0.02, 100).tolist(), "variance_type": "learned_range"}
    score = sd.from_diffusers(model, cfg)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = float(score.sde.timestep_to_t(41, 100))
    assert torch.equal(score.eps(x, t), torch.zeros_like(x))
    assert torch.equal(seen[-1], torch.full((3,), 41.0, dtype=torch.float64))


# --- flow matching: FlowSDE + FlowVelocityScore ------------------------------------------------------------------
# The same tiny U-Net read as a velocity network. diffusers' flow schedulers keep their sigmas in float32 and step
# in float32; measured (diffusers 0.42, shifts 1 and 3): Euler 5e-8 to 6e-8 relative, DPM-Solver++ (2M) 1.1e-7;
# asserted 1e-5. What the checks tell apart is 2e-4 (Euler without its last step) to 5.7e-3 (DDIM for 2M).
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_euler_reproduces_flow_match_euler(unet, x_T, shift):
    """FlowMatchEulerDiscreteScheduler's loop ``x <- x + (s_next - s) v`` is DDIM on the flow path (its x0 and eps
    recombined at the next noise level), from pure noise (``T = 1``); its last step to ``s = 0`` is the
    denoising step ``x0 = x - s v``."""
    sch = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sch.set_timesteps(8)
    ref = diffusers_loop(unet, sch, x_T.clone())
    score = sd.from_diffusers(unet, sch, T=1.0)
    assert isinstance(score, sd.FlowVelocityScore) and score.sde.shift == shift
    grid = score.sde.unshifted(sch.sigmas[:-1].double())
    out = sd.sample(score, method="ddim", grid=grid, x_init=x_T, denoise=True)
    assert out.nfe == 8
    assert rel(out.x, ref) < 1e-5, rel(out.x, ref)
    wrong = sd.sample(score, method="ddim", grid=grid, x_init=x_T)  # without the step to s = 0 (from 0.001 shift)
    assert rel(wrong.x, ref) > 1e-4  # measured 2.2e-4 at shift 1


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_dpmpp2m_reproduces_diffusers_flow_sigmas(unet, x_T, shift):
    """DPMSolverMultistepScheduler with ``use_flow_sigmas``, ``flow_shift`` and ``flow_prediction`` (Sana, Wan):
    our dpm++2m on its sigmas, without our lower-order final step, then the denoising step to ``s = 0``."""
    kw = dict(num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True)
    kw.update(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction", final_sigmas_type="zero")
    sch = diffusers.DPMSolverMultistepScheduler(solver_type="heun", **kw)
    sch.set_timesteps(7)

    # diffusers calls the model at the integer timesteps int(s * 1000) while it steps with the exact s; this
    # network floors what it is given (ours passes s * 1000, continuous, as SD3-style models are trained).
    def floored(x, ts):
        return unet(x, torch.floor(torch.as_tensor(ts, dtype=torch.float64) + 1e-3))

    ref = diffusers_loop(floored, sch, x_T.clone())
    score = sd.from_diffusers(floored, sch, T=1.0)
    grid = score.sde.unshifted(sch.sigmas[:-1].double())
    out = sd.sample(score, method="dpm++2m", grid=grid, x_init=x_T, denoise=True, lower_order_final=False)
    assert out.nfe == 7
    assert rel(out.x, ref) < 1e-5, rel(out.x, ref)
    ddim = sd.sample(score, method="ddim", grid=grid, x_init=x_T, denoise=True)
    assert rel(ddim.x, ref) > 1e-3  # a first-order method on the same grid: told apart


def test_flow_schedulers_are_read_and_bad_configs_refused(unet):
    dyn = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    with pytest.raises(ValueError, match="mu="):
        sd.from_diffusers(unet, dyn)
    assert sd.from_diffusers(unet, dyn, mu=0.8).sde.shift == pytest.approx(2.225540928492468, rel=1e-15)
    uni = diffusers.UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction")
    assert repr(sd.from_diffusers(unet, uni).sde) == "FlowSDE(shift=5.0)"
    bad = diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="epsilon")
    with pytest.raises(ValueError, match="flow_prediction"):
        sd.from_diffusers(unet, bad)
    karras = diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        sd.from_diffusers(unet, karras)
    with pytest.raises(ValueError, match="flow-matching schedulers only"):
        sd.from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False), T=1.0)
