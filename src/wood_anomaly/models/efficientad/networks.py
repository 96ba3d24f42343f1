"""EfficientAD networks: frozen teacher (pretrained Lite0 features), small student, autoencoder.

All three produce maps on the same grid: ``image_size / 4`` cells per side (stride 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wood_anomaly.models.features import FeatureExtractor


class Teacher(nn.Module):
    """Frozen pretrained feature extractor; layers resized to the stride-4 grid and concatenated.

    The output is normalised channel-wise with the mean/std of the training images' teacher
    features (buffers ``mean``/``std``, set by :meth:`set_normalisation`), as in the paper.
    """

    def __init__(self, backbone: str, layers: Sequence[str], weights: str | None, grid: int, device: str = "cpu") -> None:
        super().__init__()
        self.extractor = FeatureExtractor(backbone, layers, weights=weights, device=device)
        self.grid = int(grid)
        self.out_channels = int(sum(self.extractor.out_channels))
        self.register_buffer("mean", torch.zeros(1, self.out_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, self.out_channels, 1, 1))

    def train(self, mode: bool = True) -> Teacher:  # always frozen
        return super().train(False)

    @torch.no_grad()
    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] backbone-normalised input -> un-normalised features [B, C, grid, grid]."""
        feats = []
        for f in self.extractor(x):
            if f.shape[-1] != self.grid:
                f = F.interpolate(f, size=(self.grid, self.grid), mode="bilinear", align_corners=False,
                                  antialias=f.shape[-1] > self.grid)
            feats.append(f)
        return torch.cat(feats, 1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mean) / self.std

    def set_normalisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean.view(1, -1, 1, 1))
        self.std.copy_(std.clamp_min(1e-6).view(1, -1, 1, 1))


def _conv(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=(k - stride + 1) // 2 if stride > 1 else k // 2)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class Student(nn.Module):
    """Small two-scale CNN, output stride 4, ``2 * out_channels`` outputs.

    The first ``out_channels`` mimic the (normalised) teacher, the second half predict the
    autoencoder's output. A stride-4 branch (receptive field 18 px) plus a stride-8 branch
    (receptive field ~58 px, upsampled) so that it can see as much context as the teacher's
    ``blocks.2`` features (receptive field 67 px) while staying cheap enough for a CPU.
    ``context`` = pixels of input needed on each side of a crop for its output to equal the
    full-image output (zero padding reaches that far in); crops must start on multiples of 8.
    """

    context = 48

    def __init__(self, out_channels: int, width: int = 32) -> None:
        super().__init__()
        w = int(width)
        self.fine = nn.Sequential(*_conv(3, w // 2, 4, stride=2), *_conv(w // 2, w, 4, stride=2), *_conv(w, w, 3))
        self.coarse = nn.Sequential(*_conv(w, 2 * w, 3, stride=2), *_conv(2 * w, 2 * w, 3), *_conv(2 * w, 2 * w, 3))
        self.head = nn.Sequential(*_conv(3 * w, 4 * w, 1), *_conv(4 * w, 2 * out_channels, 1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fine(x)
        c = F.interpolate(self.coarse(f), size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([f, c], 1))


class AutoEncoder(nn.Module):
    """Encoder of stride-2 convs down to a 1x1 latent, decoder of bilinear upsampling + 3x3 convs.

    The bottleneck removes fine detail: the AE can only reproduce the teacher's *global* / logical
    layout, so the student-AE discrepancy catches structural anomalies the local student misses.
    ``image_size`` must be a multiple of 32; the output grid is ``image_size / 4``.
    """

    def __init__(self, out_channels: int, image_size: int, latent: int = 64, width: int = 64) -> None:
        super().__init__()
        if image_size % 32:
            raise ValueError(f"EfficientAD autoencoder: image_size must be a multiple of 32, got {image_size}")
        w = int(width)
        k_last = image_size // 32
        self.encoder = nn.Sequential(
            *_conv(3, w // 2, 4, stride=2),
            *_conv(w // 2, w // 2, 4, stride=2),
            *_conv(w // 2, w, 4, stride=2),
            *_conv(w, w, 4, stride=2),
            *_conv(w, w, 4, stride=2),
            nn.Conv2d(w, latent, k_last),  # -> [B, latent, 1, 1]
        )
        self.grid = image_size // 4
        # decode up to half the grid, then upsample bilinearly: the AE output is smooth anyway and
        # the last full-resolution convolutions would cost most of its compute
        self.sizes = [max(1, self.grid // 2**k) for k in (5, 4, 3, 2, 1)]
        self.decoder = nn.ModuleList(
            [nn.Sequential(*_conv(latent if i == 0 else w, w, 3)) for i in range(len(self.sizes))]
        )
        self.head = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        for size, block in zip(self.sizes, self.decoder):
            z = block(F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False))
        return F.interpolate(self.head(z), size=(self.grid, self.grid), mode="bilinear", align_corners=False)
