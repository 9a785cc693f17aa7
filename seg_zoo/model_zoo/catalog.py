"""The catalog of downloadable seg_zoo models: one entry per row of MODEL_ZOO.md.

Names follow the official download URL: ``mask2former/<dataset>/<task>/<folder>`` is the part
of ``https://dl.fbaipublicfiles.com/maskformer/<name>/model_final_<suffix>.pkl`` between the host
prefix and the file name, e.g. ``mask2former/coco/panoptic/maskformer2_R50_bs16_50ep``. That
folder is the one identifier the official zoo itself keeps stable; it usually equals the config
stem, except where the official zoo kept an older name (the Mapillary Vistas semantic R50 row,
whose folder is ``maskformer_R50_bs16_300k``). ``find_by_config`` maps a config path to its
entry, and ``list_models()`` lists every name.

Segmenter releases are named ``segmenter/<dataset>/<folder>`` after their official URL
``.../segmenter/checkpoints/<dataset>/<folder>/checkpoint.pth``; the folder is also the config
stem. Those files are PyTorch checkpoints with the official names, so their entries carry
``converter="segmenter"``: the first use converts the download into a seg_zoo ``.pkl``. The Swin
paper's UperNet releases (mmseg checkpoints) are ``upernet/ade20k/<file stem>`` with
``converter="mmseg_upernet"``.

The entries were generated once from MODEL_ZOO.md (tests/model_zoo/test_catalog.py checks the
two still agree) and are kept as plain data so that importing seg_zoo never parses Markdown.

sha256 policy (see ``seg_zoo.model_zoo.download``): a known sha256 is always verified before
the file is used; an unknown one (``None``) is allowed with a warning that prints the digest of
what was downloaded, unless the entry sets ``require_sha256`` or the environment sets
``SEG_ZOO_REQUIRE_SHA256=1``, in which case the download is refused. The digests live in
``pins.py``, written by ``tools/pin_model_zoo.py`` after it has checked that each downloaded file
builds its config's model. The official weights could not be downloaded where this catalog was
written, so that tool has not been run on them yet and no official sha256 is pinned.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .pins import SHA256 as SHA256_PINS

# The root of the checkout: config paths in the catalog are relative to it.
REPO_ROOT = Path(__file__).resolve().parents[2]

URI_PREFIX = "seg_zoo://"

# Values of ``ModelZooEntry.converter``.
CONVERTERS = (None, "segmenter", "mmseg_upernet")


@dataclass(frozen=True)
class ModelZooEntry:
    """One downloadable checkpoint and the config that builds its model."""

    name: str  # catalog key, used as seg_zoo://<name>
    config: str  # path of the YAML relative to the repository root
    url: str  # where the weights are downloaded from (http, https or file)
    sha256: str | None = None  # hex digest of the weights file; None = not pinned yet
    model_id: str = ""  # the official model id of the row, for reference only
    metrics: Mapping[str, float] = field(default_factory=dict)  # official numbers of the row
    # Refuse to use the weights unless ``sha256`` is pinned (for entries whose integrity matters
    # more than convenience, e.g. ones served from a mirror).
    require_sha256: bool = False
    # How the downloaded file becomes a checkpoint seg_zoo loads: None = used as it is;
    # "segmenter" = an official Segmenter ``checkpoint.pth``, renamed to seg_zoo's names and
    # written beside it as a detectron2 ``.pkl`` (``seg_zoo.model_zoo.download``). ``sha256``
    # is always the digest of the downloaded (official) file.
    converter: str | None = None

    def __post_init__(self):
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    f"model zoo entry {self.name!r}: sha256 must be 64 hex digits, "
                    f"got {self.sha256!r}"
                )
            object.__setattr__(self, "sha256", digest)
        if self.converter not in CONVERTERS:
            raise ValueError(
                f"model zoo entry {self.name!r}: unknown converter {self.converter!r}; "
                f"known: {sorted(c for c in CONVERTERS if c)}"
            )
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def uri(self) -> str:
        return URI_PREFIX + self.name

    @property
    def config_path(self) -> Path:
        """Absolute path of the config in this checkout."""
        return REPO_ROOT / self.config


class UnknownModelError(KeyError):
    """A ``seg_zoo://`` name that the catalog does not hold."""

    def __str__(self) -> str:
        # KeyError's own __str__ would print the message with quotes and escaped newlines.
        return str(self.args[0])


def _entry(name, config, url, *, model_id, metrics, converter=None):
    return ModelZooEntry(
        name=name,
        config=config,
        url=url,
        sha256=SHA256_PINS.get(name),
        model_id=model_id,
        metrics=metrics,
        converter=converter,
    )


def _converted_semantic(name: str, config: str, url: str, converter: str, ss: float, ms: float):
    """A semantic release of another codebase, converted on first use; single-scale and
    multi-scale + flip mIoU of its official README."""
    metrics = {"mIoU": ss, "mIoU (ms+flip)": ms}
    return _entry(name, config, url, model_id="", metrics=metrics, converter=converter)


SEGMENTER_URL = "https://www.rocq.inria.fr/cluster-willow/rstrudel/segmenter/checkpoints"


def _segmenter(dataset: str, folder: str, config_dataset: str, ss: float, ms: float):
    """An official Segmenter release: ``<SEGMENTER_URL>/<dataset>/<folder>/checkpoint.pth``."""
    return _converted_semantic(
        f"segmenter/{dataset}/{folder}",
        f"configs/{config_dataset}/semantic-segmentation/segmenter/{folder}.yaml",
        f"{SEGMENTER_URL}/{dataset}/{folder}/checkpoint.pth",
        "segmenter",
        ss,
        ms,
    )


SWIN_UPERNET_URL = "https://github.com/SwinTransformer/storage/releases/download/v1.0.1"


def _swin_upernet(size: str, ss: float, ms: float):
    """An official Swin + UperNet ADE20K release (mmseg checkpoint)."""
    stem = f"upernet_swin_{size}_patch4_window7_512x512"
    return _converted_semantic(
        f"upernet/ade20k/{stem}",
        f"configs/ade20k/semantic-segmentation/upernet/upernet_swin_{size}_bs16_160k.yaml",
        f"{SWIN_UPERNET_URL}/{stem}.pth",
        "mmseg_upernet",
        ss,
        ms,
    )


# Generated from MODEL_ZOO.md; order as in the document.
_ENTRIES = [
    _entry(
        "mask2former/coco/panoptic/maskformer2_R50_bs16_50ep",
        "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/maskformer2_R50_bs16_50ep/model_final_94dc52.pkl",
        model_id="47430278_4",
        metrics={"PQ": 51.9, "AP": 41.7, "mIoU": 61.7},
    ),
    _entry(
        "mask2former/coco/panoptic/maskformer2_R101_bs16_50ep",
        "configs/coco/panoptic-segmentation/maskformer2_R101_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/maskformer2_R101_bs16_50ep/model_final_b807bd.pkl",
        model_id="47992113_1",
        metrics={"PQ": 52.6, "AP": 42.6, "mIoU": 62.4},
    ),
    _entry(
        "mask2former/coco/panoptic/maskformer2_swin_tiny_bs16_50ep",
        "configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/maskformer2_swin_tiny_bs16_50ep/model_final_9fd0ae.pkl",
        model_id="48558700_1",
        metrics={"PQ": 53.2, "AP": 43.3, "mIoU": 63.2},
    ),
    _entry(
        "mask2former/coco/panoptic/maskformer2_swin_small_bs16_50ep",
        "configs/coco/panoptic-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/maskformer2_swin_small_bs16_50ep/model_final_a407fd.pkl",
        model_id="48558700_3",
        metrics={"PQ": 54.6, "AP": 44.7, "mIoU": 64.2},
    ),
    _entry(
        "mask2former/coco/panoptic/maskformer2_swin_base_384_bs16_50ep",
        "configs/coco/panoptic-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/maskformer2_swin_base_384_bs16_50ep/model_final_9d7f02.pkl",
        model_id="48558700_5",
        metrics={"PQ": 55.1, "AP": 45.2, "mIoU": 65.1},
    ),
    _entry(
        "mask2former/coco/panoptic/maskformer2_swin_base_IN21k_384_bs16_50ep",
        "configs/coco/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_54b88a.pkl",
        model_id="48558700_7",
        metrics={"PQ": 56.4, "AP": 46.3, "mIoU": 67.1},
    ),
    _entry(
        "mask2former/coco/panoptic/maskformer2_swin_large_IN21k_384_bs16_100ep",
        "configs/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/panoptic/maskformer2_swin_large_IN21k_384_bs16_100ep/model_final_f07440.pkl",
        model_id="47429163_0",
        metrics={"PQ": 57.8, "AP": 48.6, "mIoU": 67.4},
    ),
    _entry(
        "mask2former/coco/instance/maskformer2_R50_bs16_50ep",
        "configs/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_R50_bs16_50ep/model_final_3c8ec9.pkl",
        model_id="47430277_2",
        metrics={"AP": 43.7, "Boundary AP": 30.6},
    ),
    _entry(
        "mask2former/coco/instance/maskformer2_R101_bs16_50ep",
        "configs/coco/instance-segmentation/maskformer2_R101_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_R101_bs16_50ep/model_final_eba159.pkl",
        model_id="47992113_0",
        metrics={"AP": 44.2, "Boundary AP": 31.1},
    ),
    _entry(
        "mask2former/coco/instance/maskformer2_swin_tiny_bs16_50ep",
        "configs/coco/instance-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_swin_tiny_bs16_50ep/model_final_86143f.pkl",
        model_id="48558700_0",
        metrics={"AP": 45.0, "Boundary AP": 31.8},
    ),
    _entry(
        "mask2former/coco/instance/maskformer2_swin_small_bs16_50ep",
        "configs/coco/instance-segmentation/swin/maskformer2_swin_small_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_swin_small_bs16_50ep/model_final_1e7f22.pkl",
        model_id="48558700_2",
        metrics={"AP": 46.3, "Boundary AP": 32.9},
    ),
    _entry(
        "mask2former/coco/instance/maskformer2_swin_base_384_bs16_50ep",
        "configs/coco/instance-segmentation/swin/maskformer2_swin_base_384_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_swin_base_384_bs16_50ep/model_final_f6e0f6.pkl",
        model_id="48558700_4",
        metrics={"AP": 46.7, "Boundary AP": 33.2},
    ),
    _entry(
        "mask2former/coco/instance/maskformer2_swin_base_IN21k_384_bs16_50ep",
        "configs/coco/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_swin_base_IN21k_384_bs16_50ep/model_final_83d103.pkl",
        model_id="48558700_6",
        metrics={"AP": 48.1, "Boundary AP": 34.4},
    ),
    _entry(
        "mask2former/coco/instance/maskformer2_swin_large_IN21k_384_bs16_100ep",
        "configs/coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/coco/instance/maskformer2_swin_large_IN21k_384_bs16_100ep/model_final_e5f453.pkl",
        model_id="48235555",
        metrics={"AP": 50.1, "Boundary AP": 36.2},
    ),
    _entry(
        "mask2former/ade20k/semantic/maskformer2_R50_bs16_160k",
        "configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/semantic/maskformer2_R50_bs16_160k/model_final_500878.pkl",
        model_id="47429167_5",
        metrics={"mIoU": 47.2, "mIoU (ms+flip)": 49.2},
    ),
    _entry(
        "mask2former/ade20k/semantic/maskformer2_R101_bs16_90k",
        "configs/ade20k/semantic-segmentation/maskformer2_R101_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/semantic/maskformer2_R101_bs16_90k/model_final_0d68be.pkl",
        model_id="48243040_0",
        metrics={"mIoU": 47.8, "mIoU (ms+flip)": 50.1},
    ),
    _entry(
        "mask2former/ade20k/semantic/maskformer2_swin_tiny_bs16_160k",
        "configs/ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/semantic/maskformer2_swin_tiny_bs16_160k/model_final_5274a6.pkl",
        model_id="48333144_5",
        metrics={"mIoU": 47.7, "mIoU (ms+flip)": 49.6},
    ),
    _entry(
        "mask2former/ade20k/semantic/maskformer2_swin_small_bs16_160k",
        "configs/ade20k/semantic-segmentation/swin/maskformer2_swin_small_bs16_160k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/semantic/maskformer2_swin_small_bs16_160k/model_final_011c6d.pkl",
        model_id="48333149_5",
        metrics={"mIoU": 51.3, "mIoU (ms+flip)": 52.4},
    ),
    _entry(
        "mask2former/ade20k/semantic/maskformer2_swin_base_384_bs16_160k_res640",
        "configs/ade20k/semantic-segmentation/swin/maskformer2_swin_base_384_bs16_160k_res640.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/semantic/maskformer2_swin_base_384_bs16_160k_res640/model_final_503e96.pkl",
        model_id="48333153_5",
        metrics={"mIoU": 52.4, "mIoU (ms+flip)": 53.7},
    ),
    _entry(
        "mask2former/ade20k/semantic/maskformer2_swin_base_IN21k_384_bs16_160k_res640",
        "configs/ade20k/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_160k_res640.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/semantic/maskformer2_swin_base_IN21k_384_bs16_160k_res640/model_final_7e47bf.pkl",
        model_id="48333157_5",
        metrics={"mIoU": 53.9, "mIoU (ms+flip)": 55.1},
    ),
    _entry(
        "mask2former/ade20k/semantic/maskformer2_swin_large_IN21k_384_bs16_160k_res640",
        "configs/ade20k/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/semantic/maskformer2_swin_large_IN21k_384_bs16_160k_res640/model_final_6b4a3a.pkl",
        model_id="48004474_0",
        metrics={"mIoU": 56.1, "mIoU (ms+flip)": 57.3},
    ),
    _entry(
        "mask2former/ade20k/panoptic/maskformer2_R50_bs16_160k",
        "configs/ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/panoptic/maskformer2_R50_bs16_160k/model_final_5c90d4.pkl",
        model_id="48243028_0",
        metrics={"PQ": 39.7, "AP": 26.5, "mIoU": 46.1},
    ),
    _entry(
        "mask2former/ade20k/panoptic/maskformer2_swin_large_IN21k_384_bs16_160k",
        "configs/ade20k/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/panoptic/maskformer2_swin_large_IN21k_384_bs16_160k/model_final_e0c58e.pkl",
        model_id="48267279",
        metrics={"PQ": 48.1, "AP": 34.2, "mIoU": 54.5},
    ),
    _entry(
        "mask2former/ade20k/instance/maskformer2_R50_bs16_160k",
        "configs/ade20k/instance-segmentation/maskformer2_R50_bs16_160k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/instance/maskformer2_R50_bs16_160k/model_final_67e945.pkl",
        model_id="47429167_7",
        metrics={"AP": 26.4},
    ),
    _entry(
        "mask2former/ade20k/instance/maskformer2_swin_large_IN21k_384_bs16_160k",
        "configs/ade20k/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/ade20k/instance/maskformer2_swin_large_IN21k_384_bs16_160k/model_final_92dae9.pkl",
        model_id="49040271_0",
        metrics={"AP": 34.9},
    ),
    _entry(
        "mask2former/cityscapes/semantic/maskformer2_R50_bs16_90k",
        "configs/cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/semantic/maskformer2_R50_bs16_90k/model_final_cc1b1f.pkl",
        model_id="48267400_4",
        metrics={"mIoU": 79.4, "mIoU (ms+flip)": 82.2},
    ),
    _entry(
        "mask2former/cityscapes/semantic/maskformer2_R101_bs16_90k",
        "configs/cityscapes/semantic-segmentation/maskformer2_R101_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/semantic/maskformer2_R101_bs16_90k/model_final_257ce8.pkl",
        model_id="48267400_13",
        metrics={"mIoU": 80.1, "mIoU (ms+flip)": 81.9},
    ),
    _entry(
        "mask2former/cityscapes/semantic/maskformer2_swin_tiny_bs16_90k",
        "configs/cityscapes/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/semantic/maskformer2_swin_tiny_bs16_90k/model_final_2d58d4.pkl",
        model_id="48333144_3",
        metrics={"mIoU": 82.1, "mIoU (ms+flip)": 83.0},
    ),
    _entry(
        "mask2former/cityscapes/semantic/maskformer2_swin_small_bs16_90k",
        "configs/cityscapes/semantic-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/semantic/maskformer2_swin_small_bs16_90k/model_final_fa26ae.pkl",
        model_id="48333149_3",
        metrics={"mIoU": 82.6, "mIoU (ms+flip)": 83.6},
    ),
    _entry(
        "mask2former/cityscapes/semantic/maskformer2_swin_base_IN21k_384_bs16_90k",
        "configs/cityscapes/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/semantic/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_1c6b65.pkl",
        model_id="48333157_3",
        metrics={"mIoU": 83.3, "mIoU (ms+flip)": 84.5},
    ),
    _entry(
        "mask2former/cityscapes/semantic/maskformer2_swin_large_IN21k_384_bs16_90k",
        "configs/cityscapes/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/semantic/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_17c1ee.pkl",
        model_id="48318254_5",
        metrics={"mIoU": 83.3, "mIoU (ms+flip)": 84.3},
    ),
    _entry(
        "mask2former/cityscapes/panoptic/maskformer2_R50_bs16_90k",
        "configs/cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/panoptic/maskformer2_R50_bs16_90k/model_final_4ab90c.pkl",
        model_id="48267400_0",
        metrics={"PQ": 62.1, "AP": 37.3, "mIoU": 77.5},
    ),
    _entry(
        "mask2former/cityscapes/panoptic/maskformer2_R101_bs16_90k",
        "configs/cityscapes/panoptic-segmentation/maskformer2_R101_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/panoptic/maskformer2_R101_bs16_90k/model_final_04d286.pkl",
        model_id="48267400_11",
        metrics={"PQ": 62.4, "AP": 37.7, "mIoU": 78.6},
    ),
    _entry(
        "mask2former/cityscapes/panoptic/maskformer2_swin_tiny_bs16_90k",
        "configs/cityscapes/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/panoptic/maskformer2_swin_tiny_bs16_90k/model_final_ceba0f.pkl",
        model_id="48333144_2",
        metrics={"PQ": 63.9, "AP": 39.1, "mIoU": 80.5},
    ),
    _entry(
        "mask2former/cityscapes/panoptic/maskformer2_swin_small_bs16_90k",
        "configs/cityscapes/panoptic-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/panoptic/maskformer2_swin_small_bs16_90k/model_final_23efb7.pkl",
        model_id="48381916",
        metrics={"PQ": 64.8, "AP": 40.7, "mIoU": 81.8},
    ),
    _entry(
        "mask2former/cityscapes/panoptic/maskformer2_swin_base_IN21k_384_bs16_90k",
        "configs/cityscapes/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/panoptic/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_fa840f.pkl",
        model_id="48333157_2",
        metrics={"PQ": 66.1, "AP": 42.8, "mIoU": 82.7},
    ),
    _entry(
        "mask2former/cityscapes/panoptic/maskformer2_swin_large_IN21k_384_bs16_90k",
        "configs/cityscapes/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/panoptic/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_064788.pkl",
        model_id="48318254_2",
        metrics={"PQ": 66.6, "AP": 43.6, "mIoU": 82.9},
    ),
    _entry(
        "mask2former/cityscapes/instance/maskformer2_R50_bs16_90k",
        "configs/cityscapes/instance-segmentation/maskformer2_R50_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/instance/maskformer2_R50_bs16_90k/model_final_01a8ed.pkl",
        model_id="48267400_8",
        metrics={"AP": 37.4, "AP50": 61.9},
    ),
    _entry(
        "mask2former/cityscapes/instance/maskformer2_R101_bs16_90k",
        "configs/cityscapes/instance-segmentation/maskformer2_R101_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/instance/maskformer2_R101_bs16_90k/model_final_c2b8c8.pkl",
        model_id="48267400_16",
        metrics={"AP": 38.5, "AP50": 63.9},
    ),
    _entry(
        "mask2former/cityscapes/instance/maskformer2_swin_tiny_bs16_90k",
        "configs/cityscapes/instance-segmentation/swin/maskformer2_swin_tiny_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/instance/maskformer2_swin_tiny_bs16_90k/model_final_6a63f8.pkl",
        model_id="48333144_4",
        metrics={"AP": 39.7, "AP50": 66.9},
    ),
    _entry(
        "mask2former/cityscapes/instance/maskformer2_swin_small_bs16_90k",
        "configs/cityscapes/instance-segmentation/swin/maskformer2_swin_small_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/instance/maskformer2_swin_small_bs16_90k/model_final_974824.pkl",
        model_id="48333149_4",
        metrics={"AP": 41.8, "AP50": 70.4},
    ),
    _entry(
        "mask2former/cityscapes/instance/maskformer2_swin_base_IN21k_384_bs16_90k",
        "configs/cityscapes/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/instance/maskformer2_swin_base_IN21k_384_bs16_90k/model_final_7a3b6d.pkl",
        model_id="48333157_4",
        metrics={"AP": 42.0, "AP50": 68.8},
    ),
    _entry(
        "mask2former/cityscapes/instance/maskformer2_swin_large_IN21k_384_bs16_90k",
        "configs/cityscapes/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/cityscapes/instance/maskformer2_swin_large_IN21k_384_bs16_90k/model_final_dfa862.pkl",
        model_id="49111004_2",
        metrics={"AP": 43.7, "AP50": 71.4},
    ),
    _entry(
        "mask2former/mapillary_vistas/semantic/maskformer_R50_bs16_300k",
        "configs/mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/mapillary_vistas/semantic/maskformer_R50_bs16_300k/model_final_6c66d0.pkl",
        model_id="49189528_1",
        metrics={"mIoU": 57.4, "mIoU (ms+flip)": 59.0},
    ),
    _entry(
        "mask2former/mapillary_vistas/semantic/maskformer2_swin_large_IN21k_384_bs16_300k",
        "configs/mapillary-vistas/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_300k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/mapillary_vistas/semantic/maskformer2_swin_large_IN21k_384_bs16_300k/model_final_90ee2d.pkl",
        model_id="49189528_0",
        metrics={"mIoU": 63.2, "mIoU (ms+flip)": 64.7},
    ),
    _entry(
        "mask2former/mapillary_vistas/panoptic/maskformer_R50_bs16_300k",
        "configs/mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/mapillary_vistas/panoptic/maskformer_R50_bs16_300k/model_final_4e9874.pkl",
        model_id="49392417_0",
        metrics={"PQ": 36.3, "mIoU": 50.7},
    ),
    _entry(
        "mask2former/mapillary_vistas/panoptic/maskformer2_swin_large_IN21k_384_bs16_300k",
        "configs/mapillary-vistas/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_300k.yaml",
        "https://dl.fbaipublicfiles.com/maskformer/mask2former/mapillary_vistas/panoptic/maskformer2_swin_large_IN21k_384_bs16_300k/model_final_132c71.pkl",
        model_id="48267065_4",
        metrics={"PQ": 45.5, "mIoU": 60.8},
    ),
    # Segmenter (Strudel et al., ICCV 2021): the official releases (github.com/rstrudel/segmenter
    # README), converted on first use. The Pascal Context one has mmsegmentation's 60 classes
    # (background included), as its config and dataset (pascal_context_60_sem_seg_*).
    _segmenter("ade20k", "seg_tiny_mask", "ade20k", 38.1, 38.8),
    _segmenter("ade20k", "seg_small_mask", "ade20k", 45.3, 46.9),
    _segmenter("ade20k", "seg_base_mask", "ade20k", 48.5, 50.0),
    _segmenter("ade20k", "seg_base_patch8", "ade20k", 49.5, 50.5),
    _segmenter("ade20k", "seg_large_mask_640", "ade20k", 51.8, 53.6),
    _segmenter("ade20k", "seg_base_deit_linear", "ade20k", 47.1, 48.1),
    _segmenter("ade20k", "seg_base_deit_mask", "ade20k", 48.7, 50.1),
    _segmenter("cityscapes", "seg_large_mask", "cityscapes", 79.1, 81.3),
    _segmenter("pascal_context", "seg_large_mask", "pascal_context", 58.1, 59.0),
    # Swin + UperNet (Liu et al., ICCV 2021): the ADE20K releases of the official
    # Swin-Transformer-Semantic-Segmentation README (ImageNet-1K backbones, 512x512, 160k).
    _swin_upernet("tiny", 44.51, 45.81),
    _swin_upernet("small", 47.64, 49.47),
    _swin_upernet("base", 48.13, 49.72),
]

# name -> entry. A plain dict on purpose: tests (and users with private mirrors) may add entries.
MODEL_ZOO: dict[str, ModelZooEntry] = {e.name: e for e in _ENTRIES}
if len(MODEL_ZOO) != len(_ENTRIES):
    raise RuntimeError("seg_zoo.model_zoo.catalog: duplicate model names")


def list_models() -> list[str]:
    """Every name that ``seg_zoo://<name>`` accepts, sorted."""
    return sorted(MODEL_ZOO)


def get_entry(name: str) -> ModelZooEntry:
    """The catalog entry of ``name`` (with or without the ``seg_zoo://`` prefix).

    An unknown name raises ``UnknownModelError`` listing the closest names and all known ones.
    """
    if name.startswith(URI_PREFIX):
        name = name[len(URI_PREFIX) :]
    name = name.strip("/")
    try:
        return MODEL_ZOO[name]
    except KeyError:
        pass
    known = list_models()
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    lines = [f"unknown seg_zoo model {name!r}."]
    if close:
        lines.append("Closest names: " + ", ".join(close) + ".")
    lines.append(
        f"All {len(known)} known names (also printed by "
        "`python -c 'import seg_zoo.model_zoo as m; print(*m.list_models(), sep=chr(10))'`):"
    )
    lines.extend("  " + k for k in known)
    raise UnknownModelError("\n".join(lines)) from None


def find_by_config(config: str | Path) -> ModelZooEntry:
    """The entry whose config is ``config`` (absolute, or relative to the repository root)."""
    path = Path(config)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(REPO_ROOT)
        except ValueError:
            pass
    rel = path.as_posix()
    for entry in MODEL_ZOO.values():
        if entry.config == rel or entry.config == "configs/" + rel:
            return entry
    raise KeyError(f"no seg_zoo model zoo entry uses the config {str(config)!r}")
