"""Export of a trained network in diffusers' folder layout (safetensors + JSON): the files diffusers names, loaded
back by scoresde and by plain json + safetensors, give the trained network's samples bit for bit."""

import json

import pytest
import torch
from safetensors.torch import load_file

import scoresde as sd
from scoresde.export import export_pretrained, load_pretrained
from scoresde.train import load_score


def test_export_round_trip(digits_ckpt, tmp_path):
    out = export_pretrained(digits_ckpt, tmp_path / "export")
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    unet = json.loads((out / "unet" / "config.json").read_text())
    assert unet["_class_name"] == "UNet" and unet["prediction_type"] == "v_prediction"
    assert unet["num_class_embeds"] == 10 and unet["sample_shape"] == [1, 8, 8]
    assert json.loads((out / "model_index.json").read_text())["unet"] == ["scoresde.models", "UNet"]

    y = torch.arange(6) % 10
    ref_score, ref_sde, _, ref_model = load_score(digits_ckpt, y=y, guidance=1.5)
    score, sde, model = load_pretrained(out, y=y, guidance=1.5)
    assert repr(sde) == repr(ref_sde)
    kw = dict(method="dpm++2m", steps=4, seed=3)
    assert torch.equal(sd.sample(score, sde, (6, 1, 8, 8), **kw).x, sd.sample(ref_score, ref_sde, (6, 1, 8, 8), **kw).x)

    # without scoresde's loader: json, safetensors and build_model
    config = {k: v for k, v in unet.items() if not k.startswith("_")}
    for k in ("prediction_type", "time_input", "sample_shape", "num_class_embeds", "data", "weights"):
        config.pop(k)
    plain = sd.models.build_model(config)
    plain.load_state_dict(load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors")))
    want = ref_model.state_dict()
    assert plain.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in plain.state_dict().items())


def test_export_refuses_to_overwrite(digits_ckpt, tmp_path):
    out = export_pretrained(digits_ckpt, tmp_path / "e")
    with pytest.raises(FileExistsError, match="force"):
        export_pretrained(digits_ckpt, out)
    export_pretrained(digits_ckpt, out, ema=False, force=True)
    assert json.loads((out / "unet" / "config.json").read_text())["weights"] == "raw"
