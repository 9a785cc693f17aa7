#!/usr/bin/env python3
"""Convert Pascal Context's 459-class labels into 59- and 60-class PNGs (`annotations_detectron2/`).

Reads $DETECTRON2_DATASETS/VOCdevkit/VOC2010/ (default root: ./datasets): the PASCAL VOC 2010
release (JPEGImages/, ImageSets/Main/{train,val}.txt) with the Pascal Context labels
(trainval.tar.gz -> trainval/*.mat, and labels.txt, checked when present). Writes
annotations_detectron2/pc59_{train,val}/*.png, where a label is the class index in
PASCAL_CONTEXT_59_CATEGORIES and 255 is ignore (unlabelled and the 400 rarer classes), and
annotations_detectron2/pc60_{train,val}/*.png, mmsegmentation's 60 classes: 0 = background
(what pc59 ignores), class i of the 59 -> i + 1.
"""

import argparse
import os
import sys

from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.prepare import PASCAL_CONTEXT_DEFAULT_SPLIT_LISTS, prepare_pascal_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--splits",
        nargs="+",
        default=list(PASCAL_CONTEXT_DEFAULT_SPLIT_LISTS),
        help="splits to convert (default: train val)",
    )
    parser.add_argument(
        "--split-list",
        action="append",
        default=[],
        metavar="SPLIT=PATH",
        help="image-id list of a split, relative to VOC2010/ or absolute (default: "
        "ImageSets/Main/SPLIT.txt); e.g. val=ImageSets/SegmentationContext/val.txt",
    )
    args = parser.parse_args()
    split_lists = {}
    for item in args.split_list:
        split, sep, path = item.partition("=")
        if not sep or not split or not path:
            parser.error(f"--split-list expects SPLIT=PATH, got {item!r}")
        split_lists[split] = path
    voc2010_dir = os.path.join(get_datasets_root(), "VOCdevkit", "VOC2010")
    try:
        counts = prepare_pascal_context(voc2010_dir, args.splits, split_lists)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    for split, n in counts.items():
        print(f"{split}: {n} label maps in annotations_detectron2/pc59_{split} and pc60_{split}")


if __name__ == "__main__":
    main()
