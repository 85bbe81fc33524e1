"""Cluster-conditional training (``TrainConfig.clusters``): k-means or spectral labels, kept in the checkpoint and
resumed bit for bit, and labels drawn from the training frequencies per sample index (``draw_labels``,
``scoresde sample --label prior``)."""

import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny import TINY_UNET

import scoresde as sd
from scoresde import checkpoint as ck
from scoresde.cli import main
from scoresde.data import cluster_labels, kmeans_labels, spectral_labels
from scoresde.shards import load_shards
from scoresde.train import TrainConfig, draw_labels, load_score, train


def test_kmeans_finds_separated_blobs_and_numbers_them_by_size():
    """Three blobs 100 standard deviations apart, of 50, 30 and 20 points in shuffled order: k-means with k = 3
    recovers them exactly, numbered by size; the labels repeat on a second call."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])
    truth = torch.cat([torch.full((n,), c) for c, n in enumerate((50, 30, 20))])
    truth = truth[torch.randperm(100, generator=g)]
    x = centres[truth] + torch.randn(100, 3, generator=g)
    labels = kmeans_labels(x.view(100, 1, 3), 3, seed=5)
    assert labels.dtype == torch.long and torch.equal(labels, truth)
    assert torch.equal(kmeans_labels(x, 3, seed=5), labels)
    for bad in (0, 101, 2.0, True):
        with pytest.raises(ValueError, match=r"k must be an int in \[1, 100\]"):
            kmeans_labels(x, bad)


def test_spectral_clusters_follow_the_manifold_where_kmeans_cuts_across_it():
    """Two concentric rings of radii 1 and 4 (120 and 80 points, noise 0.05, shuffled): no two Euclidean balls
    separate them, so k-means with k = 2 cuts both rings, while spectral clustering on the 10-nearest-neighbour
    graph (the rings' neighbours are all on their own ring: they are 3 apart, neighbours on a ring about 0.2)
    recovers them exactly, numbered by size; the labels repeat on a second call, and cluster_labels dispatches."""
    g = torch.Generator().manual_seed(0)
    truth = torch.cat([torch.zeros(120, dtype=torch.long), torch.ones(80, dtype=torch.long)])
    truth = truth[torch.randperm(200, generator=g)]
    angle = 2 * math.pi * torch.rand(200, generator=g, dtype=torch.float64)
    radius = torch.where(truth == 0, 1.0, 4.0).double()
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], 1) + 0.05 * torch.randn(200, 2, generator=g)
    labels = spectral_labels(x.view(200, 1, 2), 2, seed=3)
    assert labels.dtype == torch.long and torch.equal(labels, truth)
    assert torch.equal(cluster_labels(x, 2, "spectral", seed=3), labels)
    km = cluster_labels(x, 2, "kmeans", seed=3)
    assert torch.equal(km, kmeans_labels(x, 2, seed=3))
    agree = float((km == truth).double().mean())
    assert max(agree, 1 - agree) < 0.8  # a line through the centre: each ring split about in half
    for bad in (0, 201, 2.0, True):
        with pytest.raises(ValueError, match=r"k must be an int in \[1, 200\]"):
            spectral_labels(x, bad)
    with pytest.raises(ValueError, match=r"n_neighbors must be an int in \[1, 199\]"):
        spectral_labels(x, 2, n_neighbors=200)
    with pytest.raises(ValueError, match="method must be one of"):
        cluster_labels(x, 2, "dbscan")


def test_spectral_clusters_of_the_digits_agree_with_the_classes():
    """The reason for the option: on the digits train split, 20 spectral clusters are purer against the classes
    than 20 k-means clusters (measured 0.969 against 0.887; each cluster's majority class counted as right)."""
    x, y = sd.data.digits("train")

    def purity(labels):
        return sum(int(torch.bincount(y[labels == c]).max()) for c in labels.unique()) / len(y)

    spectral, kmeans = purity(spectral_labels(x, 20)), purity(kmeans_labels(x, 20))
    assert spectral > 0.95 and kmeans < 0.9


def test_config_checks_clusters():
    assert TrainConfig(data="digits", clusters=12).model_config()["num_classes"] == 12
    assert TrainConfig(data="moons", n_train=64, clusters=8).model_config()["num_classes"] == 8
    for bad, match in [
        (dict(data="digits", clusters=3, class_conditional=True), "clusters must be 0 for a class-conditional run"),
        (dict(data="digits", clusters=2000), "clusters must be at most the 1438 training examples"),
        (dict(data="moons", n_train=64, clusters=65), "at most the 64 training examples"),
        (dict(data="moons", clusters=-1), "clusters must be an int >= 0"),
        (dict(data="digits", clusters=5, cluster_method="dbscan"), "cluster_method must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_cluster_run_keeps_its_labels_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The checkpoint holds the k-means labels and their counts; a resumed run trains on the stored labels (k-means
    is not run again) and ends where an uninterrupted run does; stored labels that do not fit are refused."""
    base = dict(
        data="digits", model=TINY_UNET, clusters=7, p_uncond=0.2, batch_size=16, warmup=4, plots=False
    )  # steps 1-4: the warm-up, whatever steps is
    straight = TrainConfig(**base, steps=8, ckpt_every=100, out=str(tmp_path / "straight"))
    train(straight, progress=False)
    a = ck.load_checkpoint(straight.out)
    x, _ = sd.data.digits("train")
    want = kmeans_labels(x, 7, seed=0)
    assert torch.equal(a.extra["cluster_labels"], want)
    assert a.extra["label_counts"] == torch.bincount(want, minlength=7).tolist()
    assert a.extra["label_counts"] == sorted(a.extra["label_counts"], reverse=True)

    split = straight.replace(steps=4, out=str(tmp_path / "split"))
    train(split, progress=False)

    def no_kmeans(*args, **kw):
        raise AssertionError("k-means ran again on resume")

    monkeypatch.setattr(sd.data, "kmeans_labels", no_kmeans)
    train(split.replace(steps=8), resume=True, progress=False)
    b = ck.load_checkpoint(split.out)
    assert a.extra["losses"] == b.extra["losses"] and torch.equal(b.extra["cluster_labels"], want)
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]) and torch.equal(a.ema[k], b.ema[k]), k

    from scoresde.train.state import _Data

    for bad in (torch.full_like(want, 7), want[:-1]):
        fake = SimpleNamespace(extra={"cluster_labels": bad}, path="ckpt")
        with pytest.raises(ck.CheckpointError, match="cluster labels do not fit 1438 examples in 7 clusters"):
            _Data.load(straight, torch.device("cpu"), fake)


def test_draw_labels_follows_the_counts_per_sample_index():
    counts = [500, 300, 150, 50, 0]
    n = 40_000
    y = draw_labels(counts, n, seed=3)
    freq = torch.bincount(y, minlength=5).double() / n
    p = torch.tensor(counts, dtype=torch.float64) / 1000
    # each frequency within 5 binomial standard deviations; a class of count 0 is never drawn
    assert (freq - p).abs().le(5 * (p * (1 - p) / n).sqrt()).all() and freq[4] == 0
    assert torch.equal(draw_labels(counts, 700, seed=3, offset=1234), y[1234:1934])  # any batch layout
    assert not torch.equal(draw_labels(counts, 100, seed=4), y[:100])
    # the label stream is not the prior's: labels and the prior's normals are independent draws of one seed
    z = sd.noise.NoiseSource(3).randn((n, 1), stream=0).flatten()
    assert abs(float(torch.corrcoef(torch.stack([z, y.double()]))[0, 1])) < 5 / math.sqrt(n)
    for bad, match in [([], "non-empty"), ([1, -1], ">= 0"), ([0, 0], "positive sum")]:
        with pytest.raises(ValueError, match=match):
            draw_labels(bad, 3)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        draw_labels(counts, 0)


@pytest.fixture(scope="module")
def cluster_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("clusters")
    cfg = TrainConfig(data="digits", model=TINY_UNET, clusters=4, steps=3, batch_size=8, ckpt_every=3, out=str(out))
    train(cfg, progress=False)
    return out


def test_sample_with_labels_from_the_prior_in_shards_and_whole(cluster_ckpt, tmp_path, capsys):
    """``--label prior``: sample ``i`` gets ``draw_labels(ckpt, ..., seed)[i]`` whether the run is sharded or not,
    with the samples of ``sd.sample`` under those labels."""
    args = ["sample", "--checkpoint", str(cluster_ckpt), "--num-samples", "11", "--steps", "3", "--seed", "5"]
    args += ["--label", "prior", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "plain"), "--save", ".safetensors"]) == 0
    assert main([*args, "--shard-size", "4", "--batch-size", "3", "--out", str(tmp_path / "s")]) == 0
    plain, shards = load_file(str(tmp_path / "plain.safetensors")), load_shards(tmp_path / "s")
    want_y = draw_labels(cluster_ckpt, 11, seed=5)
    assert torch.equal(plain["y"], want_y) and torch.equal(shards["y"], want_y)
    score, sde, _, _ = load_score(cluster_ckpt, y=want_y)
    # scoresde sample's defaults: dpm++2m, ending with the denoising step
    want = sd.sample(score, sde, (11, 1, 8, 8), method="dpm++2m", steps=3, seed=5, denoise=True).x
    assert torch.allclose(plain["x"], want, rtol=0, atol=1e-6)
    assert torch.allclose(shards["x"], want, rtol=0, atol=1e-6)
    capsys.readouterr()
    base = ["sample", "--checkpoint", str(cluster_ckpt), "--n", "2", "--steps", "2", "--out", str(tmp_path / "e")]
    assert main([*base, "--label", "4"]) == 2
    assert "--label must be a class 0-3, 'all' or 'prior', got '4'" in capsys.readouterr().err
    assert main([*base, "--label", "all", "--save", ".safetensors"]) == 0
    assert torch.equal(load_file(str(tmp_path / "e.safetensors"))["y"], torch.tensor([0, 1]))


def test_cli_trains_a_cluster_model(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", "moons", "--clusters", "3", "--steps", "2", "--batch-size", "32", "--no-plots"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    cfg = TrainConfig.from_saved(out / "config.json")
    assert cfg.clusters == 3 and ck.load_checkpoint(out).extra["label_counts"].__len__() == 3
    assert cfg.cluster_method == "kmeans"


def test_a_spectral_cluster_run_trains_on_spectral_labels(tmp_path):
    """``--cluster-method spectral`` reaches the config and the checkpoint holds the spectral labels; a config
    saved before the option existed means k-means."""
    from scoresde.train.config import upgrade_saved_config

    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--clusters", "6", "--cluster-method", "spectral", "--steps", "1"]
    args += ["--batch-size", "4", "--no-plots", "--no-progress", "--out", str(out)]
    assert main([*args, "--model", "unet"]) == 0
    cfg = TrainConfig.from_saved(out / "config.json")
    x, _ = sd.data.digits("train")
    assert cfg.cluster_method == "spectral"
    assert torch.equal(ck.load_checkpoint(out).extra["cluster_labels"], spectral_labels(x, 6, seed=0))
    old = {k: v for k, v in cfg.to_dict().items() if k != "cluster_method"}
    assert upgrade_saved_config(old)["cluster_method"] == "kmeans"
