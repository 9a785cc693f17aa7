#!/usr/bin/env python
"""Convert a Swin ImageNet checkpoint (Microsoft's official .pth or timm's) for D2SwinTransformer.

    python tools/convert-pretrained-swin-model-to-d2.py swin_tiny_patch4_window7_224.pth \
        swin_tiny_patch4_window7_224.pkl
    python tools/convert-pretrained-swin-model-to-d2.py swin_base_patch4_window12_384_22k.pth \
        swin_base_384_window7.pkl --window-size 7   # resize the relative position bias tables

The output is detectron2's model-zoo .pkl; point MODEL.WEIGHTS at it. Give --window-size (and
--pretrain-img-size for models with an absolute position embedding) when the config's
MODEL.SWIN values differ from the checkpoint's.
"""

import argparse
import logging
import os
import sys

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_zoo.model_zoo.convert import (  # noqa: E402
    convert_file,
    convert_swin_to_d2,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="Swin checkpoint: .pth/.pt/.bin or .safetensors")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    parser.add_argument(
        "--window-size", type=int, default=None, help="MODEL.SWIN.WINDOW_SIZE of the target"
    )
    parser.add_argument(
        "--pretrain-img-size",
        type=int,
        default=None,
        help="MODEL.SWIN.PRETRAIN_IMG_SIZE of the target (resizes absolute_pos_embed)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.output.endswith(".pkl"):
        parser.error(f"{args.output}: the output must end in .pkl (detectron2 model-zoo format)")

    def convert(state_dict):
        return convert_swin_to_d2(
            state_dict, window_size=args.window_size, pretrain_img_size=args.pretrain_img_size
        )

    return convert_file(
        args.input, args.output, convert, author="seg_zoo: Swin ImageNet conversion"
    )


if __name__ == "__main__":
    sys.exit(main())
