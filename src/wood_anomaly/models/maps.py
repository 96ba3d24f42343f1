"""Image and anomaly-map helpers shared by the PyTorch models (batched, on any device)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur


def gaussian_blur_maps(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [N, H, W] maps with a Gaussian (kernel 2*ceil(4 sigma)+1, reflect padding); sigma <= 0: no-op."""
    if sigma <= 0:
        return maps
    radius = min(int(math.ceil(4.0 * sigma)), min(maps.shape[-2:]) - 1)  # reflect padding needs pad < size
    return gaussian_blur(maps.unsqueeze(1), kernel_size=[2 * radius + 1] * 2, sigma=[float(sigma)] * 2).squeeze(1)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N,H,W,3] -> uint8 [N,size,size,3] (bilinear, antialiased); a no-op at the right size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()
