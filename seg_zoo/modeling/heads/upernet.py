"""UperNet's decode head and the auxiliary FCN head, as the Swin Transformer paper used them.

UperNet (Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018, Sec. 3):
a pyramid pooling module (PSPNet) on the coarsest backbone stage, an FPN top-down path over all
stages, every level upsampled to the finest one, concatenated and fused by a 3x3 conv, then a
1x1 classifier. The layer sizes follow mmsegmentation's ``UPerHead`` / ``FCNHead`` with the
settings of the Swin paper's ADE20K recipe (512 channels, pool scales (1, 2, 3, 6), dropout
0.1; auxiliary head on stage 3 with one 3x3 conv of 256 channels). Module names mirror mmseg's
(``psp_modules``, ``bottleneck``, ``lateral_convs``, ``fpn_convs``, ``fpn_bottleneck``,
``conv_seg``, ``convs``) so that converting an mmseg checkpoint is a plain rename.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.utils import comm
from torch import nn


def per_pixel_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_value: int, align_corners: bool = False
) -> torch.Tensor:
    """Mean cross-entropy over the labelled pixels, logits resized to the label size first.

    ``logits``: (N, K, h, w) at the head's stride; ``targets``: (N, H, W) integer labels where
    ``ignore_value`` marks pixels that do not count. Resizing the logits (not the labels)
    keeps thin structures of the label map, as mmseg and detectron2's SemSegFPNHead do.
    A batch with no labelled pixel gives 0 (connected to the graph) instead of NaN.
    """
    if logits.dim() != 4 or targets.dim() != 3 or logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"per_pixel_cross_entropy expects logits (N, K, h, w) and targets (N, H, W); "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class labels, got dtype {targets.dtype}")
    logits = F.interpolate(
        logits, size=targets.shape[-2:], mode="bilinear", align_corners=align_corners
    )
    targets = targets.long()
    if not (targets != ignore_value).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, ignore_index=ignore_value, reduction="mean")


def _conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> Conv2d:
    """mmcv's ConvModule with the default act: conv (bias only without norm), norm, ReLU."""
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=kernel_size // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
        activation=F.relu,
    )


def _check_features(features: dict, names: Sequence[str], where: str) -> None:
    missing = [n for n in names if n not in features]
    if missing:
        raise KeyError(
            f"{where} needs backbone features {list(names)} but {missing} are missing; the "
            f"backbone gives {sorted(features)} (set {where}'s IN_FEATURES / the backbone's "
            f"OUT_FEATURES to match)"
        )


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


class _PoolingLevel(nn.Sequential):
    """One PPM branch: adaptive average pool to ``scale x scale``, then a 1x1 conv block."""

    def __init__(self, scale: int, in_channels: int, channels: int, norm: str):
        super().__init__(
            nn.AdaptiveAvgPool2d(scale), _conv_norm_relu(in_channels, channels, 1, norm)
        )
        self.scale = scale


@SEM_SEG_HEADS_REGISTRY.register()
class UperNetHead(nn.Module):
    """UperNet decode head: PPM on the coarsest feature, FPN fusion of all, 1x1 classifier.

    ``layers(features)`` returns logits (N, num_classes, h, w) at the stride of the finest input
    feature. ``forward(features, targets)`` follows detectron2's ``SemSegFPNHead`` contract, so
    the head also plugs into detectron2's ``SemanticSegmentor``; seg_zoo's ``UperNet``
    meta-architecture calls ``layers`` and adds the auxiliary head.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "BN",
        dropout: float = 0.1,
        align_corners: bool = False,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
    ):
        """
        Args:
            input_shape: the backbone features the head fuses; they are ordered by stride, and
                the coarsest one feeds the pyramid pooling module.
            num_classes: classifier outputs.
            channels: width of every conv of the head.
            pool_scales: output sides of the PPM's adaptive average pools.
            norm: detectron2 norm name for every conv ("SyncBN", "BN", "GN", "" for none).
            dropout: Dropout2d probability before the classifier.
            align_corners: of every bilinear resize.
            ignore_value: label of pixels that take no loss (``forward`` only).
            loss_weight: factor of the loss ``forward`` returns.
        """
        super().__init__()
        if not input_shape:
            raise ValueError("UperNetHead needs at least one input feature")
        if num_classes <= 0 or channels <= 0:
            raise ValueError(
                f"UperNetHead: num_classes ({num_classes}) and channels ({channels}) must be > 0"
            )
        if not pool_scales or any(int(s) <= 0 for s in pool_scales):
            raise ValueError(f"UperNetHead: pool_scales must be positive, got {pool_scales}")
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [name for name, _ in ordered]
        in_channels = [spec.channels for _, spec in ordered]
        self.common_stride = ordered[0][1].stride
        self.align_corners = align_corners
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

        # Pyramid pooling on the coarsest feature (PSPNet): global context at several grids.
        self.psp_modules = nn.ModuleList(
            _PoolingLevel(int(s), in_channels[-1], channels, norm) for s in pool_scales
        )
        self.bottleneck = _conv_norm_relu(
            in_channels[-1] + len(pool_scales) * channels, channels, 3, norm
        )
        # FPN: 1x1 laterals and 3x3 output convs for every level but the coarsest, whose
        # lateral is the PPM output itself.
        self.lateral_convs = nn.ModuleList(
            _conv_norm_relu(c, channels, 1, norm) for c in in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            _conv_norm_relu(channels, channels, 3, norm) for _ in in_channels[:-1]
        )
        self.fpn_bottleneck = _conv_norm_relu(len(in_channels) * channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # mmseg's classifier init
        nn.init.zeros_(self.conv_seg.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        names = list(cfg.MODEL.UPERNET.IN_FEATURES)
        _check_features(input_shape, names, "MODEL.UPERNET")
        return {
            "input_shape": {k: input_shape[k] for k in names},
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "channels": cfg.MODEL.UPERNET.CHANNELS,
            "pool_scales": tuple(cfg.MODEL.UPERNET.POOL_SCALES),
            "norm": cfg.MODEL.UPERNET.NORM,
            "dropout": cfg.MODEL.UPERNET.DROPOUT,
            "align_corners": cfg.MODEL.UPERNET.ALIGN_CORNERS,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
        }

    def _resize(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def _check_ppm_batch(self, x: torch.Tensor) -> None:
        # A 1x1 pooled map of one image gives BatchNorm a single value per channel, which
        # torch rejects with an error that does not say which setting to change.
        if not self.training or x.shape[0] > 1 or comm.get_world_size() > 1:
            return
        for level in self.psp_modules:
            if level.scale == 1 and _is_batch_norm(level[1].norm):
                raise ValueError(
                    "UperNetHead: training with BatchNorm and pool scale 1 needs more than one "
                    "image per batch (per process); raise SOLVER.IMS_PER_BATCH or set "
                    "MODEL.UPERNET.NORM to 'GN'"
                )

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (N, num_classes, h, w) at the finest input feature's resolution."""
        _check_features(features, self.in_features, "UperNetHead")
        inputs = [features[name] for name in self.in_features]
        top = inputs[-1]
        self._check_ppm_batch(top)
        pooled = [self._resize(level(top), top.shape[-2:]) for level in self.psp_modules]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs[:-1])]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        # Top-down: each level adds the (already fused) coarser one, coarsest first.
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._resize(
                laterals[i], laterals[i - 1].shape[-2:]
            )
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        fused = torch.cat([outs[0], *(self._resize(x, size) for x in outs[1:])], dim=1)
        return self.conv_seg(self.dropout(self.fpn_bottleneck(fused)))

    def forward(self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None):
        """detectron2's SemSegFPNHead contract: ``(None, losses)`` in training, else
        ``(logits upsampled by the common stride, {})``."""
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("UperNetHead: training needs the (N, H, W) label targets")
            loss = per_pixel_cross_entropy(logits, targets, self.ignore_value, self.align_corners)
            return None, {"loss_sem_seg": loss * self.loss_weight}
        logits = F.interpolate(
            logits,
            scale_factor=self.common_stride,
            mode="bilinear",
            align_corners=self.align_corners,
        )
        return logits, {}


class FCNAuxHead(nn.Module):
    """Auxiliary FCN head (mmseg's FCNHead, concat_input=False): 3x3 conv blocks + classifier.

    It only adds a loss in training (deep supervision of stage 3); inference ignores it.
    """

    @configurable
    def __init__(
        self,
        *,
        in_feature: str,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        num_convs: int = 1,
        norm: str = "BN",
        dropout: float = 0.1,
    ):
        """
        Args:
            in_feature: name of the backbone feature it reads.
            in_channels: channels of that feature.
            num_classes: classifier outputs.
            channels: width of the 3x3 conv blocks.
            num_convs: number of 3x3 conv blocks (>= 1).
            norm: detectron2 norm name for the conv blocks.
            dropout: Dropout2d probability before the classifier.
        """
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"FCNAuxHead: num_convs must be >= 1, got {num_convs}")
        self.in_feature = in_feature
        self.convs = nn.Sequential(
            *(
                _conv_norm_relu(in_channels if i == 0 else channels, channels, 3, norm)
                for i in range(num_convs)
            )
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        name = cfg.MODEL.UPERNET.AUX_IN_FEATURE
        if name not in input_shape:
            raise KeyError(
                f"MODEL.UPERNET.AUX_IN_FEATURE is {name!r} but the backbone gives "
                f"{sorted(input_shape)}"
            )
        return {
            "in_feature": name,
            "in_channels": input_shape[name].channels,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "channels": cfg.MODEL.UPERNET.AUX_CHANNELS,
            "num_convs": cfg.MODEL.UPERNET.AUX_NUM_CONVS,
            "norm": cfg.MODEL.UPERNET.NORM,
            "dropout": cfg.MODEL.UPERNET.DROPOUT,
        }

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits (N, num_classes, h, w) at the stride of ``in_feature``."""
        _check_features(features, [self.in_feature], "FCNAuxHead")
        return self.conv_seg(self.dropout(self.convs(features[self.in_feature])))
