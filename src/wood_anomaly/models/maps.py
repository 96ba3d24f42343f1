"""Image and anomaly-map helpers shared by the PyTorch models (batched, on any device)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian of 2*radius+1 taps (float64; torchvision's ``gaussian_blur`` kernel)."""
    x = torch.linspace(-radius, radius, 2 * radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return k / k.sum()


@functools.lru_cache(maxsize=32)
def _blur_matrix(n: int, sigma: float, radius: int) -> torch.Tensor:
    """[n, n] float64 matrix B with (B @ x) = x convolved with the 1-D Gaussian, reflect padding."""
    k = gaussian_kernel1d(sigma, radius)
    rows = torch.arange(n).repeat_interleave(2 * radius + 1)
    cols = torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None, :]
    cols = cols.abs()  # reflect at the start: -1 -> 1
    cols = torch.where(cols > n - 1, 2 * (n - 1) - cols, cols).reshape(-1)  # reflect at the end
    out = torch.zeros(n, n, dtype=torch.float64)
    out.index_put_((rows, cols), k.repeat(n), accumulate=True)
    return out


def gaussian_blur_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [N, H, W] maps with a Gaussian (kernel 2*ceil(4 sigma)+1, reflect padding); sigma <= 0: no-op.

    The same result as torchvision's ``gaussian_blur`` (whose 2-D kernel is the outer product of
    the 1-D one), computed separably as two matrix products ``B_h @ map @ B_w^T`` with banded
    blur matrices that hold the reflect padding: one batched GEMM instead of a k x k
    convolution (k = 33 for a 4-pixel blur), about 15x faster on a CPU.
    """
    if sigma <= 0:
        return maps
    h, w = maps.shape[-2:]
    radius = min(int(math.ceil(4.0 * sigma)), min(h, w) - 1)  # reflect padding needs pad < size
    if radius < 1:
        return maps
    bh = _blur_matrix(int(h), float(sigma), radius).to(device=maps.device, dtype=maps.dtype)
    bw = bh if w == h else _blur_matrix(int(w), float(sigma), radius).to(device=maps.device, dtype=maps.dtype)
    return torch.matmul(torch.matmul(bh, maps), bw.T)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N,H,W,3] -> uint8 [N,size,size,3] (bilinear, antialiased); a no-op at the right size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()
