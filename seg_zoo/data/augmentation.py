"""Augmentations and small helpers shared by seg_zoo's dataset mappers.

The mappers differ in which ground truth they read (semantic PNG, panoptic PNG + segments,
COCO-style annotations) but share the same steps around it: read an image with an error that
names the file, build the resize/crop/photometric/flip pipeline from config, turn annotations
into binary masks in the augmented frame, and pad to a size divisibility. Those steps live here.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

# The SSD photometric distortion the official configs train with; re-exported so that mappers
# and user code import it from here whatever detectron2 project it lives in.
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import polygons_to_bitmask

__all__ = [
    "ColorAugSSDTransform",
    "RandomChoice",
    "build_flip_augmentation",
    "build_resize_crop_resize_augmentation",
    "build_resize_crop_augmentations",
    "read_image_checked",
    "read_label_map",
    "check_same_size",
    "check_category_ids",
    "annotations_to_masks",
    "pad_bottom_right",
    "pad_to_divisibility",
]


# ------------------------------------------------------------------------------------------
# Augmentation lists from config
# ------------------------------------------------------------------------------------------
def build_flip_augmentation(cfg) -> list[T.Augmentation]:
    """``INPUT.RANDOM_FLIP`` ("none" | "horizontal" | "vertical") as a list of 0 or 1 flips."""
    mode = cfg.INPUT.RANDOM_FLIP
    if mode == "none":
        return []
    if mode not in ("horizontal", "vertical"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {mode!r}"
        )
    return [T.RandomFlip(horizontal=mode == "horizontal", vertical=mode == "vertical")]


def build_resize_crop_augmentations(cfg, category_area_crop: bool) -> list[T.Augmentation]:
    """The MaskFormer training pipeline: shortest-edge resize, optional crop, SSD colour, flip.

    Args:
        category_area_crop: crop with ``RandomCrop_CategoryAreaConstraint`` (needs a semantic
            map in the ``AugInput``) instead of a plain ``RandomCrop``.
    """
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        if category_area_crop:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                )
            )
        else:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        # detectron2's transform only asserts on the format; say which config key is wrong.
        if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
            raise ValueError(
                f"INPUT.COLOR_AUG_SSD needs INPUT.FORMAT 'BGR' or 'RGB', got {cfg.INPUT.FORMAT!r}"
            )
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    augs.extend(build_flip_augmentation(cfg))
    return augs


class RandomChoice(T.Augmentation):
    """One of several augmentation lists, picked at random for each input.

    The counterpart of mmdet's ``AutoAugment`` / mmcv's ``RandomChoice`` pipelines. ``probs``
    gives each branch's chance (uniform when omitted). The choice uses numpy's global generator,
    like every detectron2 augmentation, so data-loader workers seed it.
    """

    def __init__(self, branches: list[list[T.Augmentation]], probs: list[float] | None = None):
        super().__init__()
        if not branches:
            raise ValueError("RandomChoice needs at least one branch")
        if probs is None:
            probs = [1.0 / len(branches)] * len(branches)
        if len(probs) != len(branches) or any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError(
                f"RandomChoice: probs {list(probs)} must be {len(branches)} non-negative numbers "
                "with a positive sum"
            )
        self.branches = [T.AugmentationList(branch) for branch in branches]
        total = float(sum(probs))
        self.probs = [float(p) / total for p in probs]

    def __call__(self, aug_input) -> T.Transform:
        i = int(np.random.choice(len(self.branches), p=self.probs))
        return self.branches[i](aug_input)

    def __repr__(self) -> str:
        inner = ", ".join(f"{p:.2f}: {b}" for p, b in zip(self.probs, self.branches))
        return f"RandomChoice({inner})"

    __str__ = __repr__


def build_resize_crop_resize_augmentation(cfg) -> T.Augmentation:
    """``INPUT.RESIZE_CROP_RESIZE``: the multi-scale resize, or with probability PROB DETR's
    resize -> random crop -> multi-scale resize (the Swin paper's COCO detection recipe)."""
    c = cfg.INPUT.RESIZE_CROP_RESIZE
    if not 0.0 <= c.PROB <= 1.0:
        raise ValueError(f"INPUT.RESIZE_CROP_RESIZE.PROB must be in [0, 1], got {c.PROB}")
    if not c.MIN_SIZE or any(int(m) <= 0 for m in c.MIN_SIZE):
        raise ValueError(
            f"INPUT.RESIZE_CROP_RESIZE.MIN_SIZE must list positive sizes, got {c.MIN_SIZE}"
        )
    crop = tuple(c.CROP_SIZE)
    if len(crop) != 2 or not 0 < crop[0] <= crop[1]:
        raise ValueError(
            f"INPUT.RESIZE_CROP_RESIZE.CROP_SIZE must be (lo, hi) with 0 < lo <= hi, got {crop}"
        )
    resize = T.ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    )
    first = T.ResizeShortestEdge(tuple(c.MIN_SIZE), cfg.INPUT.MAX_SIZE_TRAIN, "choice")
    cropped = [first, T.RandomCrop("absolute_range", crop), resize]
    return RandomChoice([[resize], cropped], [1.0 - c.PROB, c.PROB])


# ------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------
def read_image_checked(file_name: str, format: str | None = None) -> np.ndarray:
    """``detection_utils.read_image`` whose failures always name the file.

    With ``format`` "BGR"/"RGB", grayscale, palette, RGBA and CMYK files all come back as
    HxWx3 uint8; with None the file's own mode is kept (label maps).
    """
    try:
        return utils.read_image(file_name, format=format)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"Image file not found: {file_name!r}") from e
    # PIL reports broken files as OSError (UnidentifiedImageError), ValueError or SyntaxError
    # depending on where decoding stops.
    except (OSError, ValueError, SyntaxError) as e:
        raise OSError(f"Could not decode image file {file_name!r}: {e}") from e


def check_same_size(image_hw, image_file: str, label_hw, label_file: str, what: str) -> None:
    """Raise ValueError naming both files when a ground-truth map and its image differ in size."""
    image_hw, label_hw = tuple(image_hw[:2]), tuple(label_hw[:2])
    if label_hw != image_hw:
        raise ValueError(
            f"{what} {label_file!r} has size (H, W)={label_hw} but its image "
            f"{image_file!r} has size (H, W)={image_hw}"
        )


def read_label_map(label_file: str, image_hw, image_file: str) -> np.ndarray:
    """Read a single-channel semantic label PNG as float64 (H, W), checked against the image.

    float64 because detectron2's resize cannot interpolate uint16/int32 arrays but keeps
    every integer label of a float64 array exact under nearest-neighbour resizing.
    """
    label = read_image_checked(label_file)
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim != 2:
        raise ValueError(
            f"Semantic label file {label_file!r} must be single-channel (H, W), got an array "
            f"of shape {tuple(label.shape)}"
        )
    check_same_size(image_hw, image_file, label.shape, label_file, "Semantic label file")
    return label.astype(np.float64)


def check_category_ids(ids, num_classes: int, file_name: str, ignore: int | None = None) -> None:
    """Raise ValueError naming the first id outside 0..num_classes-1 (``ignore`` allowed)."""
    for cid in ids:
        cid = int(cid)
        if cid == ignore:
            continue
        if not 0 <= cid < num_classes:
            raise ValueError(
                f"Category id {cid} in {file_name!r} is outside the valid range "
                f"0..{num_classes - 1} (MODEL.SEM_SEG_HEAD.NUM_CLASSES, capped by the length "
                "of the dataset metadata's class list)"
            )


# ------------------------------------------------------------------------------------------
# Instance annotations -> masks in the augmented frame
# ------------------------------------------------------------------------------------------
def _segmentation_to_mask(segm, transforms: T.TransformList, in_hw, out_hw, file_name: str):
    """One annotation's "segmentation" as an (H, W) bool mask in the transformed frame."""
    if isinstance(segm, list):
        # Polygons are moved geometrically and rasterised once, at the output resolution,
        # which keeps edges sharper than resizing a rasterised mask.
        polygons = []
        for p in segm:
            p = np.asarray(p, dtype=np.float64).reshape(-1)
            if p.size < 6 or p.size % 2:
                raise ValueError(
                    f"A polygon in {file_name!r} has {p.size} coordinates; expected an even "
                    "number >= 6 (x0, y0, x1, y1, ...)"
                )
            polygons.append(p.reshape(-1, 2))
        polygons = [q.reshape(-1) for q in transforms.apply_polygons(polygons)]
        return polygons_to_bitmask(polygons, *out_hw)
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError(
                f"An RLE segmentation in {file_name!r} lacks 'counts' or 'size': keys "
                f"{sorted(segm)}"
            )
        if tuple(segm["size"]) != tuple(in_hw):
            raise ValueError(
                f"An RLE segmentation in {file_name!r} has size {list(segm['size'])} but the "
                f"image has size (H, W)={tuple(in_hw)}"
            )
        if isinstance(segm["counts"], list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, *segm["size"])
        mask = mask_util.decode(segm)
    elif isinstance(segm, np.ndarray):
        if segm.shape != tuple(in_hw):
            raise ValueError(
                f"A binary mask in {file_name!r} has shape {segm.shape} but the image has "
                f"size (H, W)={tuple(in_hw)}"
            )
        mask = segm
    else:
        raise ValueError(
            f"Unsupported segmentation of type {type(segm).__name__} in {file_name!r}; "
            "expected polygons (list), COCO RLE (dict) or an (H, W) numpy mask"
        )
    # Values are 0/1 so nearest resizing keeps them; compare with 1 (not != 0) because crops
    # that pad (FixedSizeCrop) fill segmentations with 255, which is not object.
    mask = transforms.apply_segmentation(np.ascontiguousarray(mask, dtype=np.uint8))
    return mask == 1


def annotations_to_masks(
    annotations: list[dict],
    transforms: T.TransformList,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    num_classes: int,
    file_name: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-crowd COCO-style annotations -> (gt_classes (N,) int64, gt_masks (N, H, W) bool).

    Crowd regions are dropped, as detectron2 and the official mappers do. Instances whose mask
    is empty after augmentation (cropped away) are dropped too: an empty target mask with a
    class asks the model for an object that is not in the picture.
    """
    classes, masks = [], []
    for anno in annotations:
        if anno.get("iscrowd", 0):
            continue
        if "category_id" not in anno or "segmentation" not in anno:
            raise ValueError(
                f"An annotation of {file_name!r} lacks 'category_id' or 'segmentation': keys "
                f"{sorted(anno)}"
            )
        check_category_ids([anno["category_id"]], num_classes, file_name)
        mask = _segmentation_to_mask(anno["segmentation"], transforms, in_hw, out_hw, file_name)
        if mask.any():
            classes.append(int(anno["category_id"]))
            masks.append(torch.from_numpy(np.ascontiguousarray(mask)))
    gt_classes = torch.tensor(classes, dtype=torch.int64)
    gt_masks = torch.stack(masks) if masks else torch.zeros((0, *out_hw), dtype=torch.bool)
    return gt_classes, gt_masks


# ------------------------------------------------------------------------------------------
# Padding
# ------------------------------------------------------------------------------------------
def pad_bottom_right(t: torch.Tensor, height: int, width: int, value) -> torch.Tensor:
    """Pad the last two dims of ``t`` on the bottom and right up to (height, width)."""
    h, w = t.shape[-2:]
    if (h, w) == (height, width):
        return t.contiguous()
    out = t.new_full((*t.shape[:-2], height, width), value)
    out[..., :h, :w] = t
    return out


def pad_to_divisibility(hw: tuple[int, int], size_divisibility: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``size_divisibility``; unchanged when it is <= 0."""
    h, w = hw
    if size_divisibility <= 0:
        return h, w
    d = size_divisibility
    return (h + d - 1) // d * d, (w + d - 1) // d * d
