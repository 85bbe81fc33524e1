"""A U-Net score network for images, after Ho et al. 2020 (appendix B) with the improvements of
Dhariwal & Nichol 2021 (scale-shift conditioning, multi-head attention).

Structure, for ``L = len(channel_mults)`` levels of channels ``c_i = base_channels * channel_mults[i]``::

    e = MLP_t(SinusoidalEmbedding(t)) [+ Embedding(y)]              (batch, 4 base_channels)
    h = Conv3x3(x)
    down:  level i: num_res_blocks x ResBlock(-> c_i, e) [+ Attention at the lowest level], each output kept
           as a skip; then (i < L-1) a stride-2 Conv3x3, H -> ceil(H / 2)
    middle: ResBlock, Attention, ResBlock
    up:    level i (reversed): (num_res_blocks + 1) x ResBlock(concat(h, skip) -> c_i, e) [+ Attention];
           then (i > 0) nearest upsampling to the exact size of the next skip and a Conv3x3
    out = Conv3x3_0(SiLU(GroupNorm(h)))                              the output conv starts at zero

    ResBlock(h, e) = skip(h) + Conv3x3_0(Dropout(SiLU(GN(Conv3x3(SiLU(GN(h)))) * (1 + s) + b)))
    with (s, b) = Linear(SiLU(e))  (the AdaGN scale-shift of Dhariwal & Nichol 2021, section 3).

Downsampling with a padded stride-2 conv takes ``H`` to ``ceil(H / 2)`` and upsampling goes back to the
skip's recorded size, so any spatial size works (7x7, 9x9, non-square) and the output has ``x``'s shape.
Every normalisation is a GroupNorm whose group count is the largest divisor of the channel count not above
``groups``. Whether the output is read as ``eps``, ``x0`` or ``v`` is the parameterisation's business
(:mod:`scoresde.param`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .embedding import SinusoidalEmbedding, check_inputs

__all__ = ["UNet"]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
    return nn.GroupNorm(g, channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = _norm(c_out, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        r = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.emb(F.silu(e))[:, :, None, None].chunk(2, dim=1)
        r = self.norm2(r) * (1 + scale) + shift
        return self.skip(h) + self.conv2(self.drop(F.silu(r)))


class _Attention(nn.Module):
    """Multi-head self-attention over the ``H W`` positions (Vaswani et al. 2017), pre-norm and residual."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, h: Tensor) -> Tensor:
        B, C, H, W = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return h + self.proj(a.transpose(-1, -2).reshape(B, C, H, W))


def _check_arguments(a: dict) -> None:
    """Validate the U-Net's constructor arguments ``a`` (its ``locals()``), naming the one that is wrong."""
    for name in ("in_channels", "base_channels", "num_res_blocks", "num_heads", "groups", "patch_size"):
        v = a[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"UNet: {name} must be a positive integer, got {v!r}")
    augment_dim, channel_mults, num_classes = a["augment_dim"], a["channel_mults"], a["num_classes"]
    if not isinstance(augment_dim, int) or isinstance(augment_dim, bool) or augment_dim < 0:
        raise ValueError(f"UNet: augment_dim must be a non-negative integer, got {augment_dim!r}")
    if not channel_mults or not all(isinstance(m, int) and m >= 1 for m in channel_mults):
        raise ValueError(f"UNet: channel_mults must be a non-empty sequence of positive integers, got {channel_mults}")
    if not 0.0 <= a["dropout"] < 1.0:
        raise ValueError(f"UNet: dropout must be in [0, 1), got {a['dropout']}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"UNet: num_classes must be None or a positive integer, got {num_classes!r}")
    lowest = a["base_channels"] * channel_mults[-1]
    if a["attention"] and lowest % a["num_heads"]:
        raise ValueError(f"UNet: num_heads={a['num_heads']} must divide the lowest level's {lowest} channels")


class UNet(nn.Module):
    """U-Net score network, ``forward(x, t, y=None) -> Tensor`` of ``x``'s shape ``(batch, C, H, W)``.

    Args:
        in_channels: image channels ``C`` (also the output channels).
        base_channels: channels of the first level; the time embedding has ``4 * base_channels``.
        channel_mults: channel multiplier of each level; ``len(channel_mults) - 1`` downsamplings.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention: self-attention at the lowest resolution (down, middle and up).
        num_heads: attention heads; must divide the lowest level's channels.
        dropout: dropout probability inside the residual blocks.
        num_classes: ``None`` for an unconditional model; else labels ``0..num_classes-1`` plus the null
            class ``num_classes`` (classifier-free guidance, Ho & Salimans 2022).
        groups: the most GroupNorm groups per normalisation (the largest divisor of the channels not above it).
        time_scale: ``t`` is embedded as ``time_scale * t``.
        augment_dim: ``> 0``: the network also takes augmentation labels ``(batch, augment_dim)`` as its fourth
            argument, added to the embedding through a linear map without bias, so zero labels (and ``None``, as
            every sampler passes) mean "not augmented" (:mod:`scoresde.augment`, Karras et al. 2022).
        patch_size: ``p > 1``: the network sees each ``p x p`` patch as ``p^2 C`` channels (a pixel unshuffle in,
            a pixel shuffle out), so its first level works at ``H / p x W / p``: about ``p^2`` times less
            compute per level (as in Hoogeboom et al. 2023's "simple diffusion"); ``p`` must divide ``H`` and ``W``.

    The defaults (1.74M parameters; levels 8x8, 4x4, 2x2 on an 8x8 input) suit the 8x8 digits of
    :func:`scoresde.data.digits`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] | list[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention: bool = True,
        num_heads: int = 4,
        dropout: float = 0.0,
        num_classes: int | None = None,
        groups: int = 8,
        time_scale: float = 1000.0,
        augment_dim: int = 0,
        patch_size: int = 1,
    ):
        super().__init__()
        channel_mults = tuple(channel_mults)
        _check_arguments(locals())
        chans = [base_channels * m for m in channel_mults]
        self.config = {
            "arch": "unet",
            "in_channels": in_channels,
            "base_channels": base_channels,
            "channel_mults": list(channel_mults),
            "num_res_blocks": num_res_blocks,
            "attention": bool(attention),
            "num_heads": num_heads,
            "dropout": float(dropout),
            "num_classes": num_classes,
            "groups": groups,
            "time_scale": float(time_scale),
        }
        if augment_dim:  # only then: a config saved before the option rebuilds as it was
            self.config["augment_dim"] = augment_dim
        if patch_size > 1:  # likewise
            self.config["patch_size"] = patch_size
        self.patch_size = patch_size
        in_channels *= patch_size**2  # the levels see patch_size x patch_size patches as channels
        self.in_channels, self.num_classes = self.config["in_channels"], num_classes
        emb_dim = 4 * base_channels
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(base_channels, scale=time_scale),
            nn.Linear(base_channels, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        self.augment_dim = augment_dim
        self.augment_embed = nn.Linear(augment_dim, emb_dim, bias=False) if augment_dim else None
        last = len(chans) - 1

        def attn(level: int, c: int) -> nn.Module:
            return _Attention(c, num_heads, groups) if attention and level == last else nn.Identity()

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        skips, c = [base_channels], base_channels
        self.down = nn.ModuleList()
        for i, c_out in enumerate(chans):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([_ResBlock(c, c_out, emb_dim, dropout, groups), attn(i, c_out)]))
                c = c_out
                skips.append(c)
            if i < last:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = _ResBlock(c, c, emb_dim, dropout, groups)
        self.mid_attn = _Attention(c, num_heads, groups) if attention else nn.Identity()
        self.mid2 = _ResBlock(c, c, emb_dim, dropout, groups)
        self.up = nn.ModuleList()
        for i in reversed(range(len(chans))):
            for _ in range(num_res_blocks + 1):
                block = _ResBlock(c + skips.pop(), chans[i], emb_dim, dropout, groups)
                self.up.append(nn.ModuleList([block, attn(i, chans[i])]))
                c = chans[i]
            if i > 0:
                self.up.append(nn.Conv2d(c, c, 3, padding=1))
        self.out_norm = _norm(c, groups)
        self.conv_out = _zero(nn.Conv2d(c, in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None, augment: Tensor | None = None) -> Tensor:
        t, y = check_inputs("UNet", x, t, y, self.num_classes)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet: expected x of shape (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        e = self.time_embed(t)
        if self.class_embed is not None:
            e = e + self.class_embed(y)
        if augment is not None:
            if self.augment_embed is None:
                raise ValueError("UNet: augmentation labels given to a network built without augment_dim")
            if augment.shape != (x.shape[0], self.augment_dim):
                raise ValueError(
                    f"UNet: augmentation labels must have shape ({x.shape[0]}, {self.augment_dim}), "
                    f"got {tuple(augment.shape)}"
                )
            e = e + self.augment_embed(augment.to(e.dtype))
        p = self.patch_size
        if p > 1:
            if x.shape[-2] % p or x.shape[-1] % p:
                raise ValueError(f"UNet: patch_size={p} must divide the image size, got {tuple(x.shape[-2:])}")
            x = F.pixel_unshuffle(x, p)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, e))
            else:
                h = layer(h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, e)), e)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), e))
            else:  # upsample to the size of the skip it meets next
                h = layer(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        out = self.conv_out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out
