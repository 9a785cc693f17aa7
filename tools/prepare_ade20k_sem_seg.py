#!/usr/bin/env python3
"""Shift ADE20K SceneParsing labels into `annotations_detectron2/` (0 -> 255, k -> k-1).

Reads $DETECTRON2_DATASETS/ADEChallengeData2016/annotations/{training,validation}/*.png
(default root: ./datasets) and writes the shifted PNGs beside them under annotations_detectron2/.
"""

import argparse
import os
import sys

from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.prepare import prepare_ade20k_sem_seg


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    base = os.path.join(get_datasets_root(), "ADEChallengeData2016")
    try:
        for split in ("training", "validation"):
            n = prepare_ade20k_sem_seg(
                os.path.join(base, "annotations", split),
                os.path.join(base, "annotations_detectron2", split),
            )
            print(f"{split}: {n} label maps")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
