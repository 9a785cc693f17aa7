#!/usr/bin/env python3
"""Build COCO-format ADE20K instance annotations (100 thing classes, RLE masks).

Reads $DETECTRON2_DATASETS/ADEChallengeData2016/{images,annotations_instance}/
{training,validation} (default root: ./datasets) and writes ade20k_instance_{train,val}.json
under ADEChallengeData2016/.
"""

import argparse
import os
import sys

from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.prepare import prepare_ade20k_instance


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    base = os.path.join(get_datasets_root(), "ADEChallengeData2016")
    try:
        for name, split in (("train", "training"), ("val", "validation")):
            n = prepare_ade20k_instance(
                os.path.join(base, "images", split),
                os.path.join(base, "annotations_instance", split),
                os.path.join(base, f"ade20k_instance_{name}.json"),
            )
            print(f"{name}: {n} images")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
