"""Pix2Seq-D's parts: analog bits, diffusion, losses, image encoder and TransUNet denoiser.

The meta-architecture that joins them is ``seg_zoo.modeling.meta_arch.pix2seq_d.Pix2SeqD``.
"""

from .encoder import FeaturePyramidMerge, ResNetTransformerEncoder
from .transunet import TransUNet

__all__ = ["FeaturePyramidMerge", "ResNetTransformerEncoder", "TransUNet"]
