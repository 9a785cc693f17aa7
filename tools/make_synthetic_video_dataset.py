#!/usr/bin/env python
"""Write seg_zoo's synthetic videos to <root>/seg_zoo_synthetic_video (skipped when up to date).

The clips (moving, occluding objects with persistent ids) and their DAVIS-2017 layout are
described in seg_zoo/data/datasets/synthetic_video.py. Point detectron2 at them with
``export DETECTRON2_DATASETS=<root>``; the registered names are synthetic_video_{train,val}.
"""

import argparse
import os
import sys
import time

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_zoo.data.datasets._paths import get_datasets_root  # noqa: E402
from seg_zoo.data.datasets.synthetic_video import (  # noqa: E402
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    generate_synthetic_video_dataset,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=get_datasets_root(),
        help="dataset root (default: $DETECTRON2_DATASETS, else 'datasets')",
    )
    parser.add_argument("--num-train", type=int, default=16, help="train clips (default 16)")
    parser.add_argument("--num-val", type=int, default=4, help="val clips (default 4)")
    parser.add_argument(
        "--frames",
        type=int,
        default=DEFAULT_FRAMES,
        help=f"frames per clip (default {DEFAULT_FRAMES})",
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=list(DEFAULT_SIZE),
        help=f"frame height and width (default {DEFAULT_SIZE[0]} {DEFAULT_SIZE[1]})",
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if the stamp says up to date"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        out = generate_synthetic_video_dataset(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            frames=args.frames,
            size=tuple(args.size),
            seed=args.seed,
            force=args.force,
        )
    except ValueError as e:
        parser.error(str(e))
    print(f"synthetic videos ready at {out} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
