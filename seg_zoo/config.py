"""All config keys seg_zoo adds to detectron2's, each with its default."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only; the functions import what they use
    from detectron2.config import CfgNode


def add_seg_zoo_config(cfg: CfgNode) -> None:
    """Add every seg_zoo key to ``cfg`` in place.

    Includes detectron2's DeepLab keys (poly LR schedule: SOLVER.POLY_LR_POWER,
    SOLVER.POLY_LR_CONSTANT_ENDING, ...), which the official Mask2Former YAMLs set, so those
    files merge unchanged. Calling it twice is harmless.
    """
    from detectron2.projects.deeplab import add_deeplab_config

    if not hasattr(cfg.SOLVER, "POLY_LR_POWER"):
        add_deeplab_config(cfg)
    add_swin_config(cfg)
    add_maskformer2_config(cfg)
    add_upernet_config(cfg)
    add_segmenter_config(cfg)
    add_vit_config(cfg)
    add_pix2seq_d_config(cfg)
    add_model_ema_config(cfg)
    add_solver_config(cfg)
    add_resize_crop_resize_config(cfg)


def load_config(config_file: str, opts: list[str] | tuple = ()) -> CfgNode:
    """detectron2's defaults + seg_zoo's keys, then ``config_file``, then ``KEY VALUE`` opts.

    Returns the config unfrozen. A missing file is named in the error (detectron2 would
    report it from deep inside its YAML loader).
    """
    import os

    from detectron2.config import get_cfg

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file!r} does not exist")
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


def add_maskformer2_config(cfg: CfgNode) -> None:
    """Add Mask2Former's keys with the official names and defaults (and MODEL.SWIN.*).

    The official ``add_maskformer2_config`` declares exactly these keys, so its YAML files merge
    unchanged. Calling it twice is harmless.
    """
    from detectron2.config import CfgNode as CN

    add_swin_config(cfg)
    if hasattr(cfg.MODEL, "MASK_FORMER"):
        return

    # ---- data ----
    # Name of the dataset mapper train_net.py builds (e.g. "coco_panoptic_lsj").
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    # Add SSD-style photometric augmentation (brightness, contrast, saturation, hue).
    cfg.INPUT.COLOR_AUG_SSD = False
    # Retry a random crop until no single semantic class covers more than this fraction of it.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad image and semantic target to a multiple of this in the mapper; -1 disables padding.
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Output side of the large-scale-jitter (LSJ) crop.
    cfg.INPUT.IMAGE_SIZE = 1024
    # Smallest resize factor of LSJ, relative to IMAGE_SIZE.
    cfg.INPUT.MIN_SCALE = 0.1
    # Largest resize factor of LSJ, relative to IMAGE_SIZE.
    cfg.INPUT.MAX_SCALE = 2.0

    # ---- solver ----
    # Weight decay of embedding parameters (query features/embeddings, level embeddings).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # Optimizer: "ADAMW" or "SGD".
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Learning-rate factor of the backbone's parameters.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    cfg.MODEL.MASK_FORMER = CN()
    # ---- loss ----
    # Add the losses of every intermediate decoder layer (auxiliary losses).
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    # Classification weight of the "no object" class.
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    # Weight of the classification loss (and of its cost in the matcher).
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    # Weight of the dice loss (and of its cost in the matcher).
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    # Weight of the binary cross-entropy mask loss (and of its cost in the matcher).
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0

    # ---- transformer ----
    # Attention heads of the transformer decoder (and of the pixel decoder's encoder).
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    # Dropout in the transformer decoder (and in the pixel decoder's encoder).
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    # Hidden width of the transformer decoder's feed-forward networks.
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    # Transformer encoder layers of the MaskFormer (v1) decoder.
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    # Transformer decoder layers (Mask2Former counts the initial prediction as one, e.g. 10).
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    # Apply LayerNorm before (True) rather than after each attention/FFN block.
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    # Width of the transformer decoder (queries and attention).
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    # Number of object queries, i.e. masks predicted per image.
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    # Feature the transformer decoder reads ("multi_scale_pixel_decoder" for Mask2Former).
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    # Project the decoder's input features even when their width equals HIDDEN_DIM.
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False

    # ---- inference ----
    cfg.MODEL.MASK_FORMER.TEST = CN()
    # Output "sem_seg" at inference.
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    # Output "instances" at inference.
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    # Output "panoptic_seg" at inference.
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    # Panoptic: drop queries whose class score is not above this.
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    # Panoptic: drop segments keeping less than this fraction of their mask after overlaps.
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    # Resize mask logits to the input size before (True) rather than after combining them.
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    # Pad batched images to a multiple of this, for backbones whose size_divisibility is 0.
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    # Registered name of the transformer decoder.
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"

    # ---- point-sampled losses (PointRend, Kirillov et al. 2020) ----
    # Points sampled per mask for the mask losses and matching costs (112 * 112).
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    # Oversampling factor k: candidate points drawn per sampled point.
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    # Fraction beta of the points taken at the most uncertain candidates.
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75

    # ---- pixel decoder ----
    # Channels of the per-pixel embeddings ("mask features") the masks are dotted with.
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    # Transformer encoder layers inside the pixel decoder (6 for MSDeformAttnPixelDecoder).
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    # Registered name of the pixel decoder (see seg_zoo.modeling.pixel_decoder).
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    # Backbone features the deformable encoder attends over; the rest go through FPN convs.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    # Sampling points per head and level of the deformable encoder.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    # Declared by the official code but not read (the encoder uses MASK_FORMER.NHEADS).
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8


def add_swin_config(cfg: CfgNode) -> None:
    """Add MODEL.SWIN.*, the keys of ``D2SwinTransformer``, with Mask2Former's names/defaults."""
    from detectron2.config import CfgNode as CN

    if hasattr(cfg.MODEL, "SWIN"):
        return
    cfg.MODEL.SWIN = CN()
    # Image size of ImageNet pre-training; sizes the absolute position embedding (APE).
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    # Side of the square patches of the patch embedding (stride of "res2").
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    # Channels of stage 1; stage i has EMBED_DIM * 2**i (T/S: 96, B: 128, L: 192).
    cfg.MODEL.SWIN.EMBED_DIM = 96
    # Number of Swin blocks in each of the four stages (T: [2,2,6,2], S/B/L: [2,2,18,2]).
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    # Attention heads in each stage (head width 32).
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    # Side of the local attention windows (7 for 224 pre-training, 12 for 384).
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    # Hidden width of the block MLP relative to the block width.
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    # Learn a bias for the query/key/value projection.
    cfg.MODEL.SWIN.QKV_BIAS = True
    # Attention scale override; None uses head_dim ** -0.5.
    cfg.MODEL.SWIN.QK_SCALE = None
    # Dropout after the position embedding, in the MLP and after the attention projection.
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    # Dropout on the attention weights.
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    # Stochastic depth of the last block; it grows linearly from 0 over the blocks.
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    # Add a learned absolute position embedding after the patch embedding.
    cfg.MODEL.SWIN.APE = False
    # LayerNorm after the patch embedding.
    cfg.MODEL.SWIN.PATCH_NORM = True
    # Stage outputs the backbone returns (strides 4, 8, 16, 32).
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Recompute each block in backward (gradient checkpointing) to save memory.
    cfg.MODEL.SWIN.USE_CHECKPOINT = False


def add_upernet_config(cfg: CfgNode) -> None:
    """Add MODEL.UPERNET.*, the keys of the UperNet head and its auxiliary FCN head.

    Defaults are the Swin Transformer paper's ADE20K recipe (mmseg's UPerHead + FCNHead). The
    class count, ignore label and main loss weight are MODEL.SEM_SEG_HEAD.{NUM_CLASSES,
    IGNORE_VALUE, LOSS_WEIGHT}. Calling it twice is harmless.
    """
    from detectron2.config import CfgNode as CN

    if hasattr(cfg.MODEL, "UPERNET"):
        return
    cfg.MODEL.UPERNET = CN()
    # Backbone features the head fuses, finest first (the PPM runs on the coarsest).
    cfg.MODEL.UPERNET.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Channels of the PPM, lateral, FPN and fusion convs.
    cfg.MODEL.UPERNET.CHANNELS = 512
    # Output sides of the pyramid pooling module's adaptive average pools.
    cfg.MODEL.UPERNET.POOL_SCALES = [1, 2, 3, 6]
    # Dropout2d before the 1x1 classifier of both heads.
    cfg.MODEL.UPERNET.DROPOUT = 0.1
    # Norm of every head conv (detectron2 get_norm: "SyncBN", "BN", "GN", ...; "" for none).
    cfg.MODEL.UPERNET.NORM = "SyncBN"
    # align_corners of every bilinear resize in the heads and the loss.
    cfg.MODEL.UPERNET.ALIGN_CORNERS = False
    # Backbone feature of the auxiliary FCN head (stage 3).
    cfg.MODEL.UPERNET.AUX_IN_FEATURE = "res4"
    # Channels of the auxiliary head's 3x3 conv.
    cfg.MODEL.UPERNET.AUX_CHANNELS = 256
    # Number of 3x3 conv blocks in the auxiliary head.
    cfg.MODEL.UPERNET.AUX_NUM_CONVS = 1
    # Weight of the auxiliary head's cross-entropy; 0 builds no auxiliary head.
    cfg.MODEL.UPERNET.AUX_LOSS_WEIGHT = 0.4
    # Images are padded to a multiple of it (0: only to the batch's largest image); negative:
    # the backbone's own size_divisibility.
    cfg.MODEL.UPERNET.SIZE_DIVISIBILITY = 32


def add_segmenter_config(cfg: CfgNode) -> None:
    """Add MODEL.SEGMENTER.* (Segmenter's decoders and sliding-window inference).

    Defaults are the official ADE20K recipe. The decoder is ``MODEL.SEM_SEG_HEAD.NAME``
    (``SegmenterLinearDecoder`` or ``SegmenterMaskTransformer``); classes and the ignored label
    are MODEL.SEM_SEG_HEAD.{NUM_CLASSES, IGNORE_VALUE}. Calling it twice is harmless.
    """
    from detectron2.config import CfgNode as CN

    if hasattr(cfg.MODEL, "SEGMENTER"):
        return
    cfg.MODEL.SEGMENTER = CN()
    # Backbone output the decoder reads: the ViT's patch-token map.
    cfg.MODEL.SEGMENTER.IN_FEATURE = "vit"
    # Transformer blocks of the Mask Transformer decoder.
    cfg.MODEL.SEGMENTER.N_LAYERS = 2
    # Dropout inside the Mask Transformer's blocks (attention weights, projections, MLP).
    cfg.MODEL.SEGMENTER.DROPOUT = 0.1
    # Stochastic depth of the Mask Transformer's blocks (the encoder has MODEL.VIT's).
    cfg.MODEL.SEGMENTER.DROP_PATH_RATE = 0.0
    # Side of the square sliding window of inference (the training crop).
    cfg.MODEL.SEGMENTER.WINDOW_SIZE = 512
    # Step between sliding windows; smaller than the window makes them overlap.
    cfg.MODEL.SEGMENTER.WINDOW_STRIDE = 512


def add_vit_config(cfg: CfgNode) -> None:
    """Add MODEL.VIT.*, the keys of the plain ViT backbone (``build_vit_backbone``).

    Defaults are ViT-Base/16 at 224 with Segmenter's stochastic depth. Calling it twice is
    harmless.
    """
    from detectron2.config import CfgNode as CN

    if hasattr(cfg.MODEL, "VIT"):
        return
    cfg.MODEL.VIT = CN()
    # Token width D (Tiny 192, Small 384, Base 768, Large 1024).
    cfg.MODEL.VIT.EMBED_DIM = 768
    # Number of transformer blocks (12; Large 24).
    cfg.MODEL.VIT.DEPTH = 12
    # Attention heads per block (Tiny 3, Small 6, Base 12, Large 16).
    cfg.MODEL.VIT.NUM_HEADS = 12
    # Side of the square patches: the output stride and the backbone's size_divisibility.
    cfg.MODEL.VIT.PATCH_SIZE = 16
    # Hidden width of the block MLP relative to D.
    cfg.MODEL.VIT.MLP_RATIO = 4.0
    # Learn a bias in the query/key/value projection.
    cfg.MODEL.VIT.QKV_BIAS = True
    # Stochastic depth of the last block; it grows linearly from 0 over the blocks.
    cfg.MODEL.VIT.DROP_PATH_RATE = 0.1
    # Dropout after the position embedding, on attention weights and in the blocks.
    cfg.MODEL.VIT.DROP_RATE = 0.0
    # Add DeiT's distillation token after the class token (DeiT checkpoints carry one).
    cfg.MODEL.VIT.DISTILLED = False
    # Image side the stored position embedding is for (grid PRETRAIN_IMG_SIZE // PATCH_SIZE).
    cfg.MODEL.VIT.PRETRAIN_IMG_SIZE = 224
    # LayerNorm epsilon: 1e-6 as timm's ViT; 1e-5 reproduces official Segmenter checkpoints.
    cfg.MODEL.VIT.NORM_EPS = 1e-6
    # Run-time position-embedding resampling: "bicubic" (timm) or "bilinear" (official Segmenter).
    cfg.MODEL.VIT.POS_EMBED_INTERPOLATION = "bicubic"


def add_pix2seq_d_config(cfg: CfgNode) -> None:
    """Add MODEL.PIX2SEQ_D.*, the keys of Pix2Seq-D (Chen et al., ICCV 2023).

    Defaults are the official image recipe (google-research/pix2seq,
    configs/config_diffusion_panoptic_{base,image}.py with its sweep values); the key names are
    the official ones in upper case. The ResNet of the image encoder is configured by
    MODEL.RESNETS.{DEPTH,NORM,STRIDE_IN_1X1,...} and MODEL.PIXEL_MEAN/STD as any detectron2 ResNet.
    Calling it twice is harmless.
    """
    from detectron2.config import CfgNode as CN

    if hasattr(cfg.MODEL, "PIX2SEQ_D"):
        return
    cfg.MODEL.PIX2SEQ_D = CN()
    c = cfg.MODEL.PIX2SEQ_D
    # Bits per pixel: half for the class (0 = void, class k -> k + 1), half for the identity.
    c.N_BITS_LABEL = 16
    # Analog bits are +-B_SCALE.
    c.B_SCALE = 0.1
    # Identities per image including 0 (void); more segments are truncated with a warning.
    c.MAX_INSTANCES_PER_IMAGE = 101
    # How segments get identities in training (official object_order): "random" (K distinct
    # random ids from 1..MAX_INSTANCES_PER_IMAGE-1; the image task), "shuffle" (a random
    # permutation of 1..K; the video task) or "none" (1..K in the order of the annotations).
    c.OBJECT_ORDER = "random"
    # What the denoiser predicts: "x_softmax_xent" (bits as OUTP_SOFTMAX_GROUPS softmaxes,
    # cross-entropy), "x_sigmoid_xent", "x" (L2 on x0) or "eps" (L2 on the noise).
    c.PRED_TYPE = "x_softmax_xent"
    # Number of softmax groups the bits are split into (2: one 256-way softmax per 8 bits).
    c.OUTP_SOFTMAX_GROUPS = 2
    # Noise schedules (official names: "cosine", "cosine@start,end,tau", "sigmoid@...", ...).
    c.TRAIN_SCHEDULE = "cosine"
    c.INFER_SCHEDULE = "cosine"
    # "ddim" or "ddpm" (or "ddpm@small").
    c.SAMPLER = "ddim"
    # Seed of the sampler's noise at inference: every generate() call draws from a generator
    # seeded with it, so an image's prediction does not depend on what ran before (evaluations
    # and DefaultPredictor are reproducible). Negative: the global torch RNG.
    c.SAMPLER_SEED = 0
    # Sampling steps per image; video frames after the first use ITERATIONS_NEXT (<= 0: same).
    c.ITERATIONS = 20
    c.ITERATIONS_NEXT = 0
    # Time difference of the asymmetric time intervals (official evaluation: 1.0 and 2.0).
    c.TD = 1.0
    # Clip of the x0 estimate while sampling: "auto" = (-B_SCALE, B_SCALE), "" = none, "lo,hi".
    c.X0_CLIP = "auto"
    # Self-conditioning: "none" (official sweeps), "x", "eps" or "auto"; its training rate.
    c.SELF_COND = "none"
    c.SELF_COND_RATE = 0.5
    # How the image conditions the denoiser: "cat" (fused features concatenated to its input),
    # "attn" (cross-attention to the encoder tokens), "cat+attn" (official) or "none".
    c.CONDITIONAL = "cat+attn"
    # Per-pixel loss weight (1 / (segment size + 1)) ** MASK_WEIGHT_P, renormalised to mean 1.
    c.MASK_WEIGHT_P = 0.2
    # Segments with fewer pixels (at mask resolution) are dropped at inference.
    c.MIN_PIXELS = 40
    # Image side / mask side (official: image 1024, mask 512).
    c.MASK_STRIDE = 2
    # Images are padded to a multiple of it (at least what encoder and U-Net need).
    c.SIZE_DIVISIBILITY = 64
    # Image encoder ("resnet-c": ResNet variant c4 + transformer encoder + pyramid merge).
    c.ENCODER = CN()
    c.ENCODER.NUM_LAYERS = 12
    c.ENCODER.DIM = 512
    c.ENCODER.MLP_DIM = 2048
    c.ENCODER.NUM_HEADS = 16
    c.ENCODER.DROP_PATH = 0.1
    c.ENCODER.DROP_UNITS = 0.1
    c.ENCODER.DROP_ATT = 0.0
    c.ENCODER.POS_ENCODING = "sin_cos"
    c.ENCODER.FUSE_DIM = 256
    c.ENCODER.FUSE_UPSAMPLE = "nearest"
    # Mask decoder (TransUNet denoiser).
    c.DECODER = CN()
    c.DECODER.DIM = 128
    c.DECODER.CH_MULTIPLIERS = [1, 1, 2, 2]
    c.DECODER.N_RES_BLOCKS = [1, 1, 1, 1]
    c.DECODER.KERNEL_SIZE = 3
    c.DECODER.DROPOUT = 0.0
    c.DECODER.IN_KERNEL_SIZE = 1
    c.DECODER.OUT_KERNEL_SIZE = 1
    c.DECODER.TRANSFORMER_DIM = 512
    c.DECODER.TRANSFORMER_BLOCKS = 6
    c.DECODER.TRANSFORMER_STRIDES = 1
    c.DECODER.PER_HEAD_DIM = 64
    c.DECODER.MHSA_RESOLUTIONS = [0]
    # Multiplier of the noise level before its sinusoidal embedding. The official panoptic
    # configs never set the model's time_scaling; 1000 is the value of the official diffusion
    # base config (config_diffusion_base.py).
    c.DECODER.TIME_SCALING = 1000.0
    # Video: p(m_t | x_t, m_{t-1}, m_{t-2}).
    c.VIDEO = CN()
    c.VIDEO.ENABLED = False
    # Offsets of the conditioning frames (official proceeding_frames "-2,-1").
    c.VIDEO.PROCEEDING_FRAMES = [-2, -1]
    # Probability of dropping (zeroing) each conditioning mask of a training sample.
    c.VIDEO.FRAMES_DROPOUT = 0.1


def add_model_ema_config(cfg: CfgNode) -> None:
    """Add MODEL_EMA.*, the exponential moving average of the weights (seg_zoo.engine.ema).

    EMA weights are updated after every optimizer step and saved in checkpoints (key
    ``ema_state``); with EVAL_WITH_EMA the trainer's evaluations use them, and so do
    ``train_net.py --eval-only`` and ``demo/demo.py`` (seg_zoo's ``Checkpointer(use_ema=True)``
    loads ``ema_state`` into the model). detectron2's own ``DefaultPredictor`` loads the raw
    ``model`` weights. Calling it twice is harmless.
    """
    from detectron2.config import CfgNode as CN

    if hasattr(cfg, "MODEL_EMA"):
        return
    cfg.MODEL_EMA = CN()
    cfg.MODEL_EMA.ENABLED = False
    cfg.MODEL_EMA.DECAY = 0.999
    cfg.MODEL_EMA.EVAL_WITH_EMA = True


def add_solver_config(cfg: CfgNode) -> None:
    """Add SOLVER.LINEAR_LR_END_FACTOR, the end of the "WarmupLinearDecayLR" schedule
    (seg_zoo.engine.lr_scheduler): the rate falls linearly to BASE_LR * LINEAR_LR_END_FACTOR at
    MAX_ITER (Pix2Seq-D's official end_lr_factor). Calling it twice is harmless."""
    if not hasattr(cfg.SOLVER, "LINEAR_LR_END_FACTOR"):
        cfg.SOLVER.LINEAR_LR_END_FACTOR = 0.0


def add_resize_crop_resize_config(cfg: CfgNode) -> None:
    """Add INPUT.RESIZE_CROP_RESIZE.*, DETR's "resize, crop, resize" training augmentation, which
    the Swin paper's COCO detectors use half of the time (read by the "detectron2" mapper).

    Per training image, with probability PROB the multi-scale resize (INPUT.MIN_SIZE_TRAIN,
    MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING) is replaced by: resize the short side to one of
    MIN_SIZE (long side <= MAX_SIZE_TRAIN), crop a random (h, w) with each side drawn from
    CROP_SIZE = (lo, hi) (detectron2's "absolute_range" crop), then the multi-scale resize.
    Calling it twice is harmless.
    """
    from detectron2.config import CfgNode as CN

    if hasattr(cfg.INPUT, "RESIZE_CROP_RESIZE"):
        return
    c = cfg.INPUT.RESIZE_CROP_RESIZE = CN()
    # Use the augmentation (training only; exclusive with INPUT.CROP).
    c.ENABLED = False
    # Chance, per image, of the resize-crop-resize branch instead of the plain resize.
    c.PROB = 0.5
    # Short side of the first resize, one picked at random per image.
    c.MIN_SIZE = (400, 500, 600)
    # (lo, hi): crop height and width are each drawn uniformly from lo..hi (capped by the image).
    c.CROP_SIZE = (384, 600)
