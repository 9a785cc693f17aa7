"""Pascal Context semantic segmentation, 59- and 60-class versions.

Names: `pascal_context_59_sem_seg_train` (4998 images), `pascal_context_59_sem_seg_val` (5105
images), the names the detectron2 open-vocabulary projects (ov-seg, CAT-Seg, SAN) use for this
benchmark; `pascal_context_60_sem_seg_{train,val}`, the same images with mmsegmentation's 60
classes (the official Segmenter's protocol). Layout, under `$DETECTRON2_DATASETS`:
    VOCdevkit/VOC2010/JPEGImages/*.jpg  (the PASCAL VOC 2010 images, all splits in one folder)
    VOCdevkit/VOC2010/annotations_detectron2/pc59_{train,val}/*.png  (label = index into
        PASCAL_CONTEXT_59_CATEGORIES, 255 = ignore: the 400 rarer classes and unlabelled pixels)
    VOCdevkit/VOC2010/annotations_detectron2/pc60_{train,val}/*.png  (label = index into
        PASCAL_CONTEXT_60_CATEGORIES: 0 = background, what pc59 ignores; nothing is ignored)
The label folders come from `tools/prepare_pascal_context.py`. A split holds exactly the images
that have a label PNG; the other JPEGs in the shared folder are skipped by detectron2's loader.

The 59-class benchmark ignores everything outside the 59 classes. The official Segmenter (via
mmsegmentation) instead trains and scores a 60th "background" class at label 0; its 59 other
classes follow the same order as ours, shifted by one.
"""

import copy
import os

from ._paths import get_datasets_root, load_sem_seg_checked, register_replacing, require_path
from .categories.pascal_context import PASCAL_CONTEXT_59_CATEGORIES, PASCAL_CONTEXT_60_CATEGORIES

__all__ = ["PASCAL_CONTEXT_59_SPLITS", "PASCAL_CONTEXT_60_SPLITS", "register_all_pascal_context"]

_PRODUCER = "tools/prepare_pascal_context.py"
_SOURCE_HINT = (
    "It is the PASCAL VOC 2010 release (VOCtrainval_03-May-2010.tar) with the Pascal Context "
    "labels (trainval.tar.gz) unpacked into VOCdevkit/VOC2010; then run "
    f"`python {_PRODUCER}`."
)

PASCAL_CONTEXT_59_SPLITS = {
    "pascal_context_59_sem_seg_train": (
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc59_train",
    ),
    "pascal_context_59_sem_seg_val": (
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc59_val",
    ),
}


PASCAL_CONTEXT_60_SPLITS = {
    "pascal_context_60_sem_seg_train": (
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc60_train",
    ),
    "pascal_context_60_sem_seg_val": (
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc60_val",
    ),
}


def _load(name: str, root: str, image_dir: str, gt_dir: str) -> list[dict]:
    # The image folder is raw data, not a derived one, so its error says where it comes from
    # (the shared helper would only name a producer script).
    require_path(
        image_dir,
        dataset_name=name,
        root=root,
        what="image folder",
        is_dir=True,
        hint=_SOURCE_HINT,
    )
    return load_sem_seg_checked(name, root, image_dir, gt_dir, "png", "jpg", None, _PRODUCER)


def register_all_pascal_context(root: str) -> None:
    """(Re-)register the Pascal Context 59 and 60 splits with their data under `root`."""
    for splits, categories in (
        (PASCAL_CONTEXT_59_SPLITS, PASCAL_CONTEXT_59_CATEGORIES),
        (PASCAL_CONTEXT_60_SPLITS, PASCAL_CONTEXT_60_CATEGORIES),
    ):
        stuff_classes = [c["name"] for c in categories]
        # Lets evaluation map a label back to the 459-class id of the release (0 = background).
        id_map = {c["id"]: i for i, c in enumerate(categories)}
        for name, (image_rel, gt_rel) in splits.items():
            image_dir = os.path.join(root, image_rel)
            gt_dir = os.path.join(root, gt_rel)
            register_replacing(
                name,
                lambda n=name, i=image_dir, g=gt_dir: _load(n, root, i, g),
                stuff_classes=list(stuff_classes),
                stuff_dataset_id_to_contiguous_id=copy.deepcopy(id_map),
                image_root=image_dir,
                sem_seg_root=gt_dir,
                evaluator_type="sem_seg",
                ignore_label=255,
            )


register_all_pascal_context(get_datasets_root())
