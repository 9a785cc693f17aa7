#!/usr/bin/env python
"""Write seg_zoo's synthetic scene dataset to <root>/seg_zoo_synthetic (skipped when up to date).

The dataset's layout and formats are described in seg_zoo/data/datasets/synthetic.py. Point
detectron2 at it with ``export DETECTRON2_DATASETS=<root>``; the registered names are
synthetic_{sem_seg,panoptic,instance}_{train,val} and synthetic_panoptic_{train,val}_with_sem_seg.
"""

import argparse
import os
import sys
import time

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_zoo.data.datasets._paths import get_datasets_root
from seg_zoo.data.datasets.synthetic import generate_synthetic_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=get_datasets_root(),
        help="dataset root (default: $DETECTRON2_DATASETS, else 'datasets')",
    )
    parser.add_argument("--num-train", type=int, default=64, help="train images (default 64)")
    parser.add_argument("--num-val", type=int, default=16, help="val images (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if the stamp says up to date"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        out = generate_synthetic_dataset(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            seed=args.seed,
            force=args.force,
        )
    except ValueError as e:
        parser.error(str(e))
    print(f"synthetic dataset ready at {out} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
