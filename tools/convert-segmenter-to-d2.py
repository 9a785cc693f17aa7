#!/usr/bin/env python
"""Convert an official Segmenter checkpoint (rstrudel/segmenter) to seg_zoo's Segmenter.

    python tools/convert-segmenter-to-d2.py seg_tiny_mask/checkpoint.pth seg_tiny_mask.pkl

reads CHECKPOINT.pth and the variant.yml beside it (or --variant), writes OUT.pkl (detectron2's
model-zoo format) and OUT.yaml, a config that builds the matching model with MODEL.WEIGHTS set
to OUT.pkl:

    python train_net.py --config-file seg_tiny_mask.yaml --eval-only
"""

import argparse
import logging
import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from seg_zoo.model_zoo.convert import load_source_state_dict, save_d2_checkpoint  # noqa: E402
from seg_zoo.model_zoo.convert_segmenter import (  # noqa: E402
    check_num_classes,
    config_from_variant,
    convert_segmenter_state_dict,
)

ADE20K_BASE = REPO / "configs/ade20k/semantic-segmentation/segmenter/Base-Segmenter-ADE20K.yaml"


def read_variant(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; the official variant.yml is expected beside the checkpoint "
            "(or pass --variant)"
        )
    try:
        with open(path) as f:
            variant = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(variant, dict):
        raise ValueError(
            f"{path}: expected a mapping with net_kwargs, got {type(variant).__name__}"
        )
    return variant


def convert(checkpoint, output, variant_path=None, base=ADE20K_BASE) -> Path:
    """Write OUT.pkl and OUT.yaml; returns the path of OUT.yaml."""
    checkpoint, output = Path(checkpoint), Path(output)
    variant_path = Path(variant_path) if variant_path else checkpoint.parent / "variant.yml"
    variant = read_variant(variant_path)
    cfg = config_from_variant(
        variant,
        base_config_path=base,
        weights=str(output.resolve()),
        source=str(variant_path),
    )
    state_dict = load_source_state_dict(checkpoint)
    check_num_classes(state_dict, cfg["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"], str(checkpoint))
    converted = convert_segmenter_state_dict(state_dict, source=str(checkpoint))
    save_d2_checkpoint(converted, output, author="segmenter")
    config_path = output.with_suffix(".yaml")
    with open(config_path, "w") as f:
        f.write(f"# Converted from {checkpoint} and {variant_path}\n")
        yaml.safe_dump(cfg, f, sort_keys=False)
    logging.info("wrote %s (%d tensors) and %s", output, len(converted), config_path)
    return config_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="official checkpoint.pth (holds 'model')")
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl); OUT.yaml beside it")
    parser.add_argument("--variant", help="official variant.yml (default: beside the checkpoint)")
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="write a config without _BASE_ (model keys only), not inheriting the ADE20K Base",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.output.endswith(".pkl"):
        parser.error(f"{args.output}: the output must end in .pkl (detectron2 model-zoo format)")
    try:
        convert(
            args.checkpoint,
            args.output,
            args.variant,
            base=None if args.standalone else ADE20K_BASE,
        )
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
