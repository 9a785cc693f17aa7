#!/usr/bin/env python
"""Convert an mmseg Swin + UperNet checkpoint (the Swin paper's ADE20K models) to seg_zoo.

    python tools/convert-mmseg-upernet-to-d2.py upernet_swin_tiny_patch4_window7_512x512.pth \\
        upernet_swin_tiny.pkl
    python train_net.py --eval-only --config-file \\
        configs/ade20k/semantic-segmentation/upernet/upernet_swin_tiny_bs16_160k.yaml \\
        MODEL.WEIGHTS upernet_swin_tiny.pkl

The config must build the same model: the Swin size and window of the checkpoint, and its class
count (``--num-classes`` checks it before anything is written). The released ADE20K models are
also in the model zoo as ``seg_zoo://upernet/ade20k/...``, converted on first use.
"""

import argparse
import functools
import logging
import os
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_zoo.model_zoo.convert import convert_file  # noqa: E402
from seg_zoo.model_zoo.convert_mmseg import (  # noqa: E402
    check_upernet_num_classes,
    convert_mmseg_upernet_state_dict,
)


def _convert(state_dict, source: str, num_classes: int | None):
    if num_classes is not None:
        check_upernet_num_classes(state_dict, num_classes, source)
    return convert_mmseg_upernet_state_dict(state_dict, source=source)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="mmseg checkpoint (.pth, holds 'state_dict')")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    parser.add_argument(
        "--num-classes", type=int, help="refuse a checkpoint with another class count"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.output.endswith(".pkl"):
        parser.error(f"{args.output}: the output must end in .pkl (detectron2 model-zoo format)")
    convert = functools.partial(_convert, source=args.input, num_classes=args.num_classes)
    return convert_file(args.input, args.output, convert, author="mmseg")


if __name__ == "__main__":
    sys.exit(main())
