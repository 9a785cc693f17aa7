"""ADE20K SceneParsing semantic segmentation: `ade20k_sem_seg_train` / `ade20k_sem_seg_val`.

Layout (official, detectron2 builtin + Mask2Former colours), under `$DETECTRON2_DATASETS`:
    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png  (labels 0..149,
        255 = ignore; written by tools/prepare_ade20k_sem_seg.py from `annotations/`)
"""

from ._paths import get_datasets_root, register_sem_seg_splits
from .categories import ADE20K_150_CATEGORIES

__all__ = [
    "ADE20K_SEM_SEG_SPLITS",
    "register_all_ade20k_semantic",
]

# name -> (image dir, label dir), relative to the dataset root.
ADE20K_SEM_SEG_SPLITS = {
    "ade20k_sem_seg_train": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/annotations_detectron2/training",
    ),
    "ade20k_sem_seg_val": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/annotations_detectron2/validation",
    ),
}


def register_all_ade20k_semantic(root: str) -> None:
    """(Re-)register the ADE20K-150 semantic splits with their data under `root`."""
    register_sem_seg_splits(
        root,
        ADE20K_SEM_SEG_SPLITS,
        gt_ext="png",
        ignore_label=255,
        gt_producer="tools/prepare_ade20k_sem_seg.py",
        stuff_classes=[c["name"] for c in ADE20K_150_CATEGORIES],
        stuff_colors=[c["color"] for c in ADE20K_150_CATEGORIES],
    )


register_all_ade20k_semantic(get_datasets_root())
