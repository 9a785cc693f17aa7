"""MaskFormer meta-architecture: a tiny model's training step and inference; the full R50 layout."""

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Instances

from seg_zoo import add_seg_zoo_config
from seg_zoo.modeling.meta_arch import MaskFormer, MaskFormerHead

REFERENCE = Path("/work/shared/reference/mask2former")
DATASET = "seg_zoo_test_maskformer_tiny"
THINGS = {1: 0, 2: 1}  # dataset id -> contiguous id; class 2 is stuff


def base_cfg():
    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
    cfg.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NAME = "MaskFormerHead"
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.IGNORE_VALUE = 255
    head.LOSS_WEIGHT = 1.0
    head.NORM = "GN"
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.COMMON_STRIDE = 4
    mf = cfg.MODEL.MASK_FORMER
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    mf.DEEP_SUPERVISION = True
    mf.NO_OBJECT_WEIGHT = 0.1
    mf.CLASS_WEIGHT = 2.0
    mf.MASK_WEIGHT = 5.0
    mf.DICE_WEIGHT = 5.0
    mf.NHEADS = 8
    mf.DROPOUT = 0.0
    mf.ENC_LAYERS = 0
    mf.PRE_NORM = False
    mf.ENFORCE_INPUT_PROJ = False
    mf.SIZE_DIVISIBILITY = 32
    mf.TRAIN_NUM_POINTS = 12544
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.INSTANCE_ON = True
    mf.TEST.PANOPTIC_ON = True
    mf.TEST.OVERLAP_THRESHOLD = 0.8
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.8
    return cfg


def r50_coco_panoptic_cfg():
    """maskformer2_R50_bs16_50ep.yaml (with its Base file), set in code."""
    cfg = base_cfg()
    cfg.DATASETS.TRAIN = ("coco_2017_train_panoptic",)
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 133
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 6
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.DIM_FEEDFORWARD = 2048
    mf.DEC_LAYERS = 10
    return cfg


def tiny_cfg():
    cfg = base_cfg()
    MetadataCatalog.get(DATASET).set(thing_dataset_id_to_contiguous_id=THINGS)
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM = 32
    mf.NHEADS = 4
    mf.DIM_FEEDFORWARD = 64
    mf.NUM_OBJECT_QUERIES = 4
    mf.DEC_LAYERS = 2
    mf.TRAIN_NUM_POINTS = 256
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    return cfg


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def random_inputs(sizes, num_instances, num_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = []
    for (h, w), n in zip(sizes, num_instances):
        instances = Instances((h, w))
        masks = torch.zeros(n, h, w, dtype=torch.bool)
        for i in range(n):
            y0, x0 = (int(v) for v in torch.randint(0, h // 2, (2,), generator=g))
            masks[i, y0 : y0 + h // 2, x0 : x0 + w // 2] = True
        instances.gt_masks = masks
        instances.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
        image = torch.randint(0, 256, (3, h, w), generator=g).float()
        batch.append({"image": image, "instances": instances})
    return batch


def test_tiny_model_is_built_from_config(tiny_model):
    assert isinstance(tiny_model, MaskFormer)
    assert isinstance(tiny_model.sem_seg_head, MaskFormerHead)
    assert tiny_model.size_divisibility == 32
    assert tiny_model.sem_seg_postprocess_before_inference
    assert tiny_model.criterion.weight_dict == {
        "loss_ce": 2.0,
        "loss_mask": 5.0,
        "loss_dice": 5.0,
        "loss_ce_0": 2.0,
        "loss_mask_0": 5.0,
        "loss_dice_0": 5.0,
    }
    assert tiny_model.criterion.eos_coef == 0.1
    assert tiny_model.thing_class_ids == [0, 1]
    # pixel_mean / pixel_std are not checkpointed.
    assert not any(k.startswith("pixel_") for k in tiny_model.state_dict())


def test_training_step_returns_weighted_losses_and_gradients(tiny_model):
    model = tiny_model
    model.train()
    batch = random_inputs([(61, 47), (53, 65)], [2, 0])
    torch.manual_seed(1)
    losses = model(batch)
    assert set(losses) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    for value in losses.values():
        assert value.ndim == 0 and torch.isfinite(value)

    # The same step through the criterion by hand, with the gt masks padded by hand: the
    # model's losses are the criterion's times the weights. The forward draws no random
    # numbers, so reseeding replays the criterion's point sampling.
    captured = {}
    handle = model.sem_seg_head.register_forward_hook(
        lambda module, args, output: captured.update(outputs=output)
    )
    torch.manual_seed(1)
    losses = model(batch)
    handle.remove()
    h_pad, w_pad = 64, 96  # max(61, 53) and max(47, 65) rounded up to multiples of 32
    targets = [
        {
            "labels": x["instances"].gt_classes,
            "masks": F.pad(
                x["instances"].gt_masks,
                (0, w_pad - x["image"].shape[2], 0, h_pad - x["image"].shape[1]),
            ),
        }
        for x in batch
    ]
    torch.manual_seed(1)
    raw = model.criterion(captured["outputs"], targets)
    for name, weight in model.criterion.weight_dict.items():
        torch.testing.assert_close(losses[name], weight * raw[name])

    sum(losses.values()).backward()
    for name in [
        "backbone.stem.conv1.weight",
        "sem_seg_head.pixel_decoder.mask_features.weight",
        "sem_seg_head.predictor.query_feat.weight",
        "sem_seg_head.predictor.class_embed.weight",
    ]:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    model.zero_grad()


def test_inference_outputs_in_original_size(tiny_model):
    model = tiny_model
    model.eval()
    batch = random_inputs([(61, 47), (53, 65)], [0, 0])
    for x in batch:
        del x["instances"]
    batch[1]["height"], batch[1]["width"] = 27, 33  # asked for a different output size
    with torch.no_grad():
        results = model(batch)
    assert len(results) == 2
    for result, size in zip(results, [(61, 47), (27, 33)]):
        assert result["sem_seg"].shape == (3, *size)
        panoptic_seg, segments_info = result["panoptic_seg"]
        assert panoptic_seg.shape == size and panoptic_seg.dtype == torch.int32
        ids = {s["id"] for s in segments_info}
        assert set(panoptic_seg.unique().tolist()) <= ids | {0}
        instances = result["instances"]
        assert instances.image_size == size
        # Only thing classes survive the panoptic filter; at most DETECTIONS_PER_IMAGE.
        assert len(instances) <= 5
        assert set(instances.pred_classes.tolist()) <= {0, 1}
        assert instances.pred_masks.shape[1:] == size
        assert instances.scores.shape == (len(instances),)


def test_head_loads_version_1_state_dict(tiny_model):
    state = tiny_model.state_dict()
    old = OrderedDict()
    for key, value in state.items():
        old[key.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.")] = value.clone()
    old._metadata = {k: dict(v) for k, v in state._metadata.items()}
    old._metadata["sem_seg_head"]["version"] = 1
    assert "sem_seg_head.mask_features.weight" in old
    fresh = build_model(tiny_cfg())
    incompatible = fresh.load_state_dict(old, strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    torch.testing.assert_close(
        fresh.sem_seg_head.pixel_decoder.mask_features.weight,
        tiny_model.sem_seg_head.pixel_decoder.mask_features.weight,
    )


def read_reference(path: Path):
    shapes, total = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("# total"):
            total = dict(field.split("=") for field in line.split()[2:])
        elif line and not line.startswith("#"):
            name, shape = line.split("\t")
            shapes[name] = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
    return shapes, total


def test_r50_coco_panoptic_state_dict_matches_official():
    reference = REFERENCE / "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml.txt"
    expected, total = read_reference(reference)
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get("MaskFormer")(r50_coco_panoptic_cfg())
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(got) - set(expected)) == []
    assert sorted(set(expected) - set(got)) == []
    assert got == expected
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for _, b in model.named_buffers() if not _.startswith("pixel_"))
    assert params == int(total["params"])
    assert trainable == int(total["trainable"])
    assert buffers == int(total["buffers"])
