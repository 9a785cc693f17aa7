#!/usr/bin/env python3
"""Convert ADE20K-full (ADE20K_2021_17_01) to 847-class uint16 .tif labels (65535 = ignore).

Reads $DETECTRON2_DATASETS/ADE20K_2021_17_01/index_ade20k.pkl and the images and *_seg.png
files it lists (default root: ./datasets); writes images_detectron2/ and annotations_detectron2/
under ADE20K_2021_17_01/, shrinking images whose shorter side exceeds 512 pixels.
"""

import argparse
import sys

from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.prepare import prepare_ade20k_full_sem_seg


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    try:
        counts = prepare_ade20k_full_sem_seg(get_datasets_root())
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(", ".join(f"{split}: {n} images" for split, n in counts.items()))


if __name__ == "__main__":
    main()
