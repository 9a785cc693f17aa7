#!/usr/bin/env python
"""Write seg_zoo's synthetic scene dataset to <root>/seg_zoo_synthetic (skipped when up to date).

The dataset's layout and formats are described in seg_zoo/data/datasets/synthetic.py. Point
detectron2 at it with ``export DETECTRON2_DATASETS=<root>``; the registered names are
synthetic_{sem_seg,panoptic,instance}_{train,val} and synthetic_panoptic_{train,val}_with_sem_seg.
"""

import os
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_zoo.data.datasets.synthetic import (  # noqa: E402
    generate_synthetic_dataset,
    generator_parser,
    run_generator,
)


def main(argv=None) -> int:
    parser = generator_parser(__doc__, "images", num_train=64, num_val=16)
    args = parser.parse_args(argv)
    return run_generator(parser, args, generate_synthetic_dataset, "synthetic dataset")


if __name__ == "__main__":
    sys.exit(main())
