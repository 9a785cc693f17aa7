"""Layers shared by seg_zoo's models; the multi-scale deformable attention op lives here."""

from .ms_deform_attn import MSDeformAttn, ms_deform_attn_pytorch
from .ms_deform_attn_op import cuda_kernel_built, extension_available, ms_deform_attn

__all__ = [
    "MSDeformAttn",
    "cuda_kernel_built",
    "extension_available",
    "ms_deform_attn",
    "ms_deform_attn_pytorch",
]
