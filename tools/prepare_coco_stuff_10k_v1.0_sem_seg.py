#!/usr/bin/env python3
"""Convert COCO-Stuff-10k into `images_detectron2/` + `annotations_detectron2/` (171 classes).

Reads $DETECTRON2_DATASETS/coco/coco_stuff_10k/ (default root: ./datasets), an unzipped
cocostuff-10k release: imageLists/{train,test}.txt, images/*.jpg and annotations/*.mat (label map
"S"). Writes images_detectron2/{train,test}/*.jpg (copies) and
annotations_detectron2/{train,test}/*.png, where a label is the class index in
COCO_STUFF_171_CATEGORIES and 255 is unlabeled.
"""

import argparse
import os
import sys

from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.prepare import COCO_STUFF_10K_VERSIONS, prepare_coco_stuff_10k_sem_seg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--release",
        choices=COCO_STUFF_10K_VERSIONS,
        default="1.0",
        help="cocostuff-10k release the .mat files come from; they number the classes "
        "differently (default: 1.0, the one the official MaskFormer script reads)",
    )
    args = parser.parse_args()
    dataset_dir = os.path.join(get_datasets_root(), "coco", "coco_stuff_10k")
    try:
        counts = prepare_coco_stuff_10k_sem_seg(dataset_dir, version=args.release)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    for split, n in counts.items():
        print(f"{split}: {n} images and label maps")


if __name__ == "__main__":
    main()
