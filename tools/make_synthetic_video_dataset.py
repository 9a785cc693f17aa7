#!/usr/bin/env python
"""Write seg_zoo's synthetic videos to <root>/seg_zoo_synthetic_video (skipped when up to date).

The clips (moving, occluding objects with persistent ids) and their DAVIS-2017 layout are
described in seg_zoo/data/datasets/synthetic_video.py. Point detectron2 at them with
``export DETECTRON2_DATASETS=<root>``; the registered names are synthetic_video_{train,val}.
"""

import os
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_zoo.data.datasets.synthetic import generator_parser, run_generator  # noqa: E402
from seg_zoo.data.datasets.synthetic_video import (  # noqa: E402
    DEFAULT_FRAMES,
    DEFAULT_SIZE,
    generate_synthetic_video_dataset,
)


def main(argv=None) -> int:
    parser = generator_parser(__doc__, "clips", num_train=16, num_val=4)
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
    args = parser.parse_args(argv)
    return run_generator(
        parser,
        args,
        generate_synthetic_video_dataset,
        "synthetic videos",
        frames=args.frames,
        size=tuple(args.size),
    )


if __name__ == "__main__":
    sys.exit(main())
