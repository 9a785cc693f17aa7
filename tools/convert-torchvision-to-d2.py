#!/usr/bin/env python
"""Convert a torchvision ResNet checkpoint (R50/R101/...) to detectron2's ResNet names.

    python tools/convert-torchvision-to-d2.py resnet50-0676ba61.pth R-50.pkl

Use the output with MODEL.RESNETS.STRIDE_IN_1X1 False, INPUT.FORMAT "RGB" and ImageNet's
PIXEL_MEAN/PIXEL_STD in RGB order, as Mask2Former's R50/R101 configs set.
"""

import argparse
import logging
import os
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_zoo.model_zoo.convert import (  # noqa: E402
    convert_file,
    convert_torchvision_resnet_to_d2,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="torchvision ResNet checkpoint: .pth or .safetensors")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.output.endswith(".pkl"):
        parser.error(f"{args.output}: the output must end in .pkl (detectron2 model-zoo format)")
    return convert_file(
        args.input, args.output, convert_torchvision_resnet_to_d2, author="torchvision"
    )


if __name__ == "__main__":
    sys.exit(main())
