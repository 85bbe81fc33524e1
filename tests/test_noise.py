"""Counter-based per-sample noise: determinism, batch-layout independence and statistical quality.

Statistical checks use fixed seeds (so they are deterministic); the thresholds are what an ideal
N(0, 1) source would pass with probability >= 1 - 1e-3 or so, stated at each check.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import scoresde as sd

F64 = torch.float64


def src(seed, offset=0):
    return sd.NoiseSource(seed, offset)


# --------------------------------------------------------------------------------------------------
# Determinism and layout independence
# --------------------------------------------------------------------------------------------------
def test_same_seed_same_values():
    a = src(123).randn((16, 7), stream=3, dtype=F64)
    b = src(123).randn((16, 7), stream=3, dtype=F64)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "other",
    [
        lambda: src(124).randn((16, 7), stream=3, dtype=F64),  # different seed
        lambda: src(123).randn((16, 7), stream=4, dtype=F64),  # different stream
        lambda: src(123, offset=16).randn((16, 7), stream=3, dtype=F64),  # different samples
    ],
    ids=["seed", "stream", "offset"],
)
def test_different_seed_stream_offset_differ(other):
    a = src(123).randn((16, 7), stream=3, dtype=F64)
    b = other()
    # no element in common at all (a collision of two 53-bit uniforms has probability ~1e-14)
    assert not torch.isin(a, b).any()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**62 - 1),
    offset=st.integers(0, 10_000),
    batch=st.integers(1, 12),
    extra=st.integers(0, 12),
    stream=st.integers(0, 1000),
)
def test_rows_independent_of_batch_layout(seed, offset, batch, extra, stream):
    """Row i of a batch starting at global index `offset` equals row offset + i of a batch starting at 0."""
    shape_rest = (3, 3)
    small = src(seed, offset).randn((batch, *shape_rest), stream=stream, dtype=F64)
    big = src(seed, 0).randn((offset + batch + extra, *shape_rest), stream=stream, dtype=F64)
    assert torch.equal(small, big[offset : offset + batch])


def test_split_batches_reassemble():
    s = 99
    whole = src(s).randn((10, 4), stream=1)
    parts = [src(s, o).randn((n, 4), stream=1) for o, n in ((0, 3), (3, 5), (8, 2))]
    assert torch.equal(torch.cat(parts), whole)


@pytest.mark.parametrize("shape", [(5, 3), (4, 1, 3, 3), (6,), (3, 1), (2, 5, 7)])
def test_odd_per_sample_sizes(shape):
    z = src(7).randn(shape, stream=0, dtype=F64)
    assert z.shape == shape and z.dtype == F64 and torch.isfinite(z).all()
    # batch-size independence holds for odd sizes too
    z2 = src(7, 1).randn((shape[0] - 1, *shape[1:]), stream=0, dtype=F64) if shape[0] > 1 else None
    if z2 is not None:
        assert torch.equal(z2, z[1:])
    # elements of a row are distinct (not a repeated or truncated pair)
    if math.prod(shape[1:]) > 1:
        rows = z.flatten(1)
        assert all(len(torch.unique(r)) == r.numel() for r in rows)


def test_dtype_and_float32_rounding():
    z64 = src(3).randn((8, 5), stream=2, dtype=F64)
    z32 = src(3).randn((8, 5), stream=2)
    assert z32.dtype == torch.float32
    assert torch.equal(z32, z64.float())


def test_negative_offset_and_missing_batch_dimension_raise():
    with pytest.raises(ValueError, match="offset must be >= 0"):
        sd.NoiseSource(0, offset=-1)
    with pytest.raises(ValueError, match="batch dimension"):
        src(0).randn((), stream=0)


def test_from_generator_is_deterministic():
    a = sd.NoiseSource.from_generator(torch.Generator().manual_seed(5))
    b = sd.NoiseSource.from_generator(torch.Generator().manual_seed(5))
    c = sd.NoiseSource.from_generator(torch.Generator().manual_seed(6))
    assert a.seed == b.seed and a.seed != c.seed
    assert torch.equal(a.randn((4, 3), stream=0), b.randn((4, 3), stream=0))
    assert not torch.equal(a.randn((4, 3), stream=0), c.randn((4, 3), stream=0))
    d = sd.NoiseSource.from_generator(torch.Generator().manual_seed(5), offset=2)
    assert d.offset == 2 and torch.equal(d.randn((2, 3), stream=0), a.randn((4, 3), stream=0)[2:])
    # it consumes the generator: two sources from one generator differ
    g = torch.Generator().manual_seed(5)
    assert sd.NoiseSource.from_generator(g).seed != sd.NoiseSource.from_generator(g).seed


# --------------------------------------------------------------------------------------------------
# Statistical quality
# --------------------------------------------------------------------------------------------------
N_ROWS, N_COLS = 4000, 64  # 256k values


@pytest.fixture(scope="module")
def draws():
    return src(2024).randn((N_ROWS, N_COLS), stream=0, dtype=F64)


def test_moments(draws):
    z = draws.flatten()
    n = z.numel()
    # N(0,1): SE(mean) = 1/sqrt(n), SE(var) = sqrt(2/(n-1)), SE(E z^3) = sqrt(15/n), SE(E z^4) = sqrt(96/n); 5 SE
    assert abs(float(z.mean())) <= 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) <= 5 * math.sqrt(2 / (n - 1))
    assert abs(float((z**3).mean())) <= 5 * math.sqrt(15 / n)
    assert abs(float((z**4).mean()) - 3) <= 5 * math.sqrt(96 / n)


def test_kolmogorov_smirnov(draws):
    # p-value threshold 1e-3: an ideal source fails with probability 1e-3 for an arbitrary seed
    assert stats.kstest(draws.flatten().numpy(), "norm").pvalue > 1e-3
    # and per column (each element position has its own counter): Bonferroni over the 64 columns
    pvals = [stats.kstest(draws[:, j].numpy(), "norm").pvalue for j in range(N_COLS)]
    assert min(pvals) > 1e-3 / N_COLS


def test_tails(draws):
    """P(|z| > 3) = 2.70e-3: binomial count with 5 SE."""
    n = draws.numel()
    p = 2 * stats.norm.sf(3)
    count = int((draws.abs() > 3).sum())
    assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def _max_abs_corr(a, b):
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0).abs().max()


def test_low_correlation_between_streams_seeds_and_samples(draws):
    """Sample correlations of independent N(0,1) columns have SE 1/sqrt(n); with 64 columns per pair,
    a Bonferroni z of 4.9 (alpha = 1e-3 over 5 x 64 checks) bounds them."""
    n = N_ROWS
    z = float(stats.norm.isf(1e-3 / (2 * 5 * N_COLS)))
    bound = z / math.sqrt(n)
    other_stream = src(2024).randn((N_ROWS, N_COLS), stream=1, dtype=F64)
    other_seed = src(2025).randn((N_ROWS, N_COLS), stream=0, dtype=F64)
    assert _max_abs_corr(draws, other_stream) <= bound
    assert _max_abs_corr(draws, other_seed) <= bound
    # adjacent samples (rows i, i + 1) and adjacent elements (columns j, j + 1)
    assert _max_abs_corr(draws[:-1], draws[1:]) <= z / math.sqrt(n - 1)
    adj_cols = float(torch.corrcoef(torch.stack([draws[:, :-1].flatten(), draws[:, 1:].flatten()]))[0, 1])
    assert abs(adj_cols) <= 5 / math.sqrt(draws[:, 1:].numel())
    # Box-Muller partners (elements j and j + 32 share one (r, theta)) are independent, so uncorrelated,
    # and so are their squares (dependent pairs from a bad transform would correlate in z^2)
    a, b = draws[:, : N_COLS // 2].flatten(), draws[:, N_COLS // 2 :].flatten()
    m = a.numel()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) <= 5 / math.sqrt(m)
    assert abs(float(torch.corrcoef(torch.stack([a**2, b**2]))[0, 1])) <= 5 / math.sqrt(m)


# Normals are drawn in float32: about 2^27 distinct values carry nearly all the mass, so two sets of
# 16,384 draws share about 16384^2 / 2^27 = 2 values by chance (measured: 2-8). A shifted or repeated
# sequence would share thousands; 30 is far above chance and far below that.
CHANCE_COINCIDENCES = 30


def test_streams_are_not_shifted_copies():
    """Generators fail most often by producing overlapping sequences: one (seed, stream) block shares no more
    values with another stream of the same seed, nor with itself, than chance allows."""
    base = src(10).randn((64, 256), stream=0, dtype=F64)
    for stream in (1, 2, 1000):
        assert int(torch.isin(base, src(10).randn((64, 256), stream=stream, dtype=F64)).sum()) < CHANCE_COINCIDENCES
    assert base.numel() - len(torch.unique(base)) < CHANCE_COINCIDENCES


def test_distant_seeds_do_not_overlap():
    base = src(12345).randn((64, 256), stream=0, dtype=F64)
    assert int(torch.isin(base, src(987654321).randn((64, 256), stream=0, dtype=F64)).sum()) < CHANCE_COINCIDENCES


def test_small_seeds_give_independent_samples():
    """Runs with seeds 0..7 (what a benchmark repeated over seeds does) and 8 samples each: no sample of one
    run may reuse the noise of a sample of another run."""
    rows = torch.cat([src(s).randn((8, 16), stream=0, dtype=F64) for s in range(8)])
    assert len(torch.unique(rows, dim=0)) == rows.shape[0]


def test_sample_equal_to_seed_is_not_seed_independent():
    a = src(10, offset=10).randn((1, 8), stream=0, dtype=F64)
    b = src(11, offset=11).randn((1, 8), stream=0, dtype=F64)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("shape", [(3000, 2), (40, 3, 17, 19)])
def test_rows_straddling_noise_blocks(shape):
    """Rows are drawn in blocks of block_rows(per-sample size) global indices; a batch that starts and ends
    inside blocks must still give every row the noise it has when drawn alone."""
    from scoresde.noise import block_rows

    rows = block_rows(math.prod(shape[1:]))
    offset = rows - 1  # start one row before a block boundary
    batch = src(5, offset=offset).randn(shape, stream=3, dtype=F64)
    for i in sorted({0, 1, min(rows, shape[0] - 1), shape[0] - 1}):  # row 1 opens the next block
        alone = src(5, offset=offset + i).randn((1, *shape[1:]), stream=3, dtype=F64)
        assert torch.equal(batch[i : i + 1], alone)


def test_seed_is_reduced_to_62_bits():
    """Seeds are taken modulo 2^62 (documented via _MASK62); negative seeds are accepted."""
    assert src(2**62 + 5).seed == 5
    z = src(-1).randn((3, 2), stream=0)
    assert torch.isfinite(z).all()


def test_many_streams_chi_square_of_first_elements():
    """The first element of streams 0..199 for one sample (what a 200-step sampler draws for it) is N(0,1)."""
    vals = np.array([float(src(77).randn((1, 1), stream=s, dtype=F64)) for s in range(200)])
    assert stats.kstest(vals, "norm").pvalue > 1e-3


# --------------------------------------------------------------------------------------------------
# Drawn on the device
# --------------------------------------------------------------------------------------------------
DEVICES = (["cuda"] if torch.cuda.is_available() else []) + (
    ["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else []
)


@pytest.mark.skipif(not DEVICES, reason="no CUDA or MPS device here: the device-side draws run where there is one")
@pytest.mark.parametrize("device", DEVICES or ["none"])
def test_device_draws_keep_the_per_sample_identity(device):
    """On a GPU the normals are drawn there (no host draw and copy per step), still one stream per sample: any batch
    split gives the same rows; they are other normals than the CPU's (another generator), with the right moments."""
    whole = src(3).randn((3000, 3, 4), stream=2, device=device)
    assert whole.device.type == device and whole.dtype == torch.float32
    parts = [src(3, o).randn((n, 3, 4), stream=2, device=device) for o, n in ((0, 7), (7, 1100), (1107, 1893))]
    assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(whole.cpu(), src(3).randn((3000, 3, 4), stream=2))
    z = whole.double().cpu().flatten()
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel()) and abs(float(z.var()) - 1) < 6 * math.sqrt(2 / z.numel())


def test_cpu_draws_are_made_on_the_cpu_generator():
    """The CPU path is the reference the golden outputs pin: block ``b`` of stream ``k`` is ``torch.randn`` from a CPU
    generator seeded with the block's hash, whatever ``device`` spelling asks for the CPU."""
    s = src(11, offset=5)
    g = torch.Generator().manual_seed(s._block_seed(0, 4))
    block = torch.randn(sd.noise.block_rows(6), 6, generator=g)
    for device in (None, "cpu", torch.device("cpu")):
        assert torch.equal(s.randn((3, 2, 3), stream=4, device=device), block[5:8].reshape(3, 2, 3))
