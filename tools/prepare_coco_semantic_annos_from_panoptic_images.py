#!/usr/bin/env python3
"""Write COCO semantic labels (133 classes, 255 = void) from the panoptic PNGs.

Reads $DETECTRON2_DATASETS/coco/annotations/panoptic_{val2017,train2017}.json and
coco/panoptic_{split}/ (default root: ./datasets) and writes coco/panoptic_semseg_{split}/, where
the label of a category is its index in detectron2's COCO_CATEGORIES (things and stuff alike).
"""

import argparse
import os
import sys

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.prepare import semantic_from_panoptic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--num-workers", type=int, default=None, help="processes (default: automatic; 0: serial)"
    )
    args = parser.parse_args()
    base = os.path.join(get_datasets_root(), "coco")
    try:
        for split in ("val2017", "train2017"):
            n = semantic_from_panoptic(
                os.path.join(base, "annotations", f"panoptic_{split}.json"),
                os.path.join(base, f"panoptic_{split}"),
                os.path.join(base, f"panoptic_semseg_{split}"),
                COCO_CATEGORIES,
                num_workers=args.num_workers,
            )
            print(f"{split}: {n} label maps")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
