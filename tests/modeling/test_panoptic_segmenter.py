"""Panoptic Segmenter: the Mask Transformer with object embeddings inside MaskFormer.

References: a slow explicit re-computation of the head's predictions (LayerNorm and L2
normalisation written out per object), a hand-worked +-1 case, shape contracts of MaskFormer's
criterion and inference, and a short CPU training scored by detectron2's panoptic evaluator.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

import seg_zoo  # noqa: F401  (registers the models)
from seg_zoo.config import load_config
from seg_zoo.modeling.heads.panoptic_segmenter import PanopticSegmenterHead

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = CONFIGS / "synthetic" / "panoptic_segmenter_vit_tiny.yaml"
FULL = [
    CONFIGS / ds / "panoptic-segmentation" / "segmenter" / "panoptic_seg_base_mask.yaml"
    for ds in ("coco", "ade20k")
]

# The short training of test_short_cpu_training_reaches_pq: ~40 s on 2 shared CPU cores.
# Measured after 150 iterations: PQ 64.5, mIoU 81.5, mask AP 23.9; the bound leaves room for
# other CPUs' arithmetic and is still far above chance (PQ 0).
ITERS = 150
PQ_BOUND = 30.0


def _layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def test_head_shapes_and_explicit_recomputation():
    torch.manual_seed(0)
    head = PanopticSegmenterHead(
        in_channels=12, num_classes=5, num_queries=7, n_layers=3, dropout=0.0,
        deep_supervision=True,
    ).eval()  # fmt: skip
    x = torch.randn(2, 12, 3, 4)
    out = head({"vit": x})
    assert out["pred_logits"].shape == (2, 7, 6)  # K + 1 with "no object"
    assert out["pred_masks"].shape == (2, 7, 3, 4)  # patch resolution
    assert len(out["aux_outputs"]) == 2  # after blocks 0 and 1; block 2 gives the final one
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (2, 7, 6) and aux["pred_masks"].shape == (2, 7, 3, 4)

    # Slow path: run the blocks by hand, then predict one object and one patch at a time.
    with torch.no_grad():
        tokens = x.flatten(2).transpose(1, 2) @ head.proj_dec.weight.T + head.proj_dec.bias
        seq = torch.cat([tokens, head.obj_emb.expand(2, -1, -1)], 1)
        for block in head.blocks:
            seq = block(seq)
        seq = _layer_norm(seq, head.decoder_norm)
        for n in range(2):
            for q in range(7):
                obj = seq[n, 12 + q]
                want = head.class_embed.weight @ obj + head.class_embed.bias
                torch.testing.assert_close(out["pred_logits"][n, q], want, rtol=1e-4, atol=1e-5)
            objs = seq[n, 12:] @ head.proj_objects
            objs = objs / objs.norm(dim=-1, keepdim=True)
            for p in range(12):
                patch = seq[n, p] @ head.proj_patch
                patch = patch / patch.norm()
                dots = torch.stack([patch @ objs[q] for q in range(7)])
                want = _layer_norm(dots, head.mask_norm)
                got = out["pred_masks"][n, :, p // 4, p % 4]
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_hand_case_masks_are_plus_minus_one():
    """No blocks, identity projections, width 2, two objects: every mask logit is +-1.

    A LayerNorm of (a, b) is (+1, -1) when a > b; after L2 normalisation a patch and an object
    agree (+1) or disagree (-1), and mask_norm over the two objects keeps (+1, -1).
    """
    head = PanopticSegmenterHead(in_channels=2, num_classes=3, num_queries=2, n_layers=0)
    with torch.no_grad():
        head.proj_dec.weight.copy_(torch.eye(2))
        head.proj_dec.bias.zero_()
        head.proj_patch.copy_(torch.eye(2))
        head.proj_objects.copy_(torch.eye(2))
        head.obj_emb.copy_(torch.tensor([[[2.0, 0.0], [0.0, 2.0]]]))
    x = torch.tensor([[3.0, -1.0], [1.0, 1.0]]).view(1, 2, 1, 2)  # patches: a > b, a < b
    masks = head.eval()({"vit": x})["pred_masks"]
    want = torch.tensor([[[[1.0, -1.0]], [[-1.0, 1.0]]]])  # (1, N, 1, 2)
    torch.testing.assert_close(masks, want, atol=1e-4, rtol=0)


def test_bad_input_is_named():
    head = PanopticSegmenterHead(in_channels=4, num_classes=2, num_queries=3)
    with pytest.raises(KeyError, match="res5"):
        head({"res5": torch.zeros(1, 4, 2, 2)})
    with pytest.raises(ValueError, match=r"\(1, 5, 2, 2\)"):
        head({"vit": torch.zeros(1, 5, 2, 2)})
    with pytest.raises(ValueError, match="num_queries"):
        PanopticSegmenterHead(in_channels=4, num_classes=2, num_queries=0)


def test_dec_layers_must_match_blocks_under_deep_supervision():
    cfg = load_config(str(TINY), ["MODEL.MASK_FORMER.DEC_LAYERS", 4])
    with pytest.raises(ValueError, match="DEC_LAYERS"):
        build_model(cfg)


@pytest.mark.parametrize("path", FULL, ids=["coco", "ade20k"])
def test_full_configs_build_the_head_on_vit_base(path):
    cfg = load_config(str(path))
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer"
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "PanopticSegmenterHead"
    mf = cfg.MODEL.MASK_FORMER
    assert (mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, mf.NO_OBJECT_WEIGHT) == (
        2.0, 5.0, 5.0, 0.1,
    )  # fmt: skip
    assert mf.TEST.PANOPTIC_ON
    head = PanopticSegmenterHead(
        **PanopticSegmenterHead.from_config(cfg, {"vit": _spec(768, 16)})
    )  # fmt: skip
    assert head.obj_emb.shape == (1, 100, 768)
    assert head.class_embed.out_features == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1


def _spec(channels, stride):
    from detectron2.layers import ShapeSpec

    return ShapeSpec(channels=channels, stride=stride)


def _tiny_model(**opts):
    flat = [str(v) for kv in opts.items() for v in kv]
    cfg = load_config(str(TINY), flat)
    torch.manual_seed(0)
    return build_model(cfg), cfg


def _image_with_two_objects(h, w):
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, : h // 2] = True
    masks[1, h // 2 :, : w // 2] = True
    inst = Instances((h, w))
    inst.gt_classes = torch.tensor([1, 4])
    inst.gt_masks = BitMasks(masks)
    return {"image": image, "instances": inst}


def test_training_step_gives_finite_losses_and_object_embedding_grads():
    model, cfg = _tiny_model()
    model.train()
    losses = model([_image_with_two_objects(64, 64), _image_with_two_objects(64, 48)])
    # final + one auxiliary prediction (DEC_LAYERS 2), each with CE, mask and dice losses
    assert set(losses) == {
        "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0",
    }  # fmt: skip
    for name, value in losses.items():
        assert torch.isfinite(value), name
    sum(losses.values()).backward()
    grad = model.sem_seg_head.obj_emb.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.sem_seg_head.class_embed.weight.grad.abs().sum() > 0


def test_inference_outputs_at_the_original_size():
    model, cfg = _tiny_model()
    model.eval()
    # 60 x 50 is padded to 64 x 56 (patch 8); outputs come back at the requested 90 x 75.
    inputs = [{"image": torch.randint(0, 255, (3, 60, 50), dtype=torch.uint8), "height": 90,
               "width": 75}]  # fmt: skip
    with torch.no_grad():
        (out,) = model(inputs)
    assert out["sem_seg"].shape == (7, 90, 75)
    panoptic, segments = out["panoptic_seg"]
    assert panoptic.shape == (90, 75)
    assert isinstance(segments, list)
    assert out["instances"].image_size == (90, 75)
    assert out["instances"].pred_masks.shape[-2:] == (90, 75)


@pytest.mark.slow
def test_short_cpu_training_reaches_pq(tmp_path_factory):
    """150 iterations of the tiny model on the synthetic panoptic data, scored by PQ.

    Chance: a model that has not learned matches no segment (PQ 0); see PQ_BOUND.
    """
    import train_net
    from seg_zoo.data.datasets.synthetic import generate_synthetic_dataset, register_all_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic_dataset(root)
    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = root
    register_all_synthetic(root)
    try:
        out = tmp_path_factory.mktemp("panoptic_segmenter")
        argv = ["--config-file", str(TINY), "--num-gpus", "1", "OUTPUT_DIR", str(out)]
        argv += ["SOLVER.MAX_ITER", str(ITERS)]
        results = train_net.main(train_net.default_argument_parser().parse_args(argv))
    finally:
        if old is None:
            os.environ.pop("DETECTRON2_DATASETS", None)
        else:
            os.environ["DETECTRON2_DATASETS"] = old
        register_all_synthetic()
    pq = results["panoptic_seg"]["PQ"]
    miou, ap = results["sem_seg"]["mIoU"], results["segm"]["AP"]
    print(f"Panoptic Segmenter tiny, {ITERS} iterations: PQ {pq:.1f}, mIoU {miou:.1f}, AP {ap:.1f}")
    assert pq == pq  # finite: the evaluation ran
    assert pq > PQ_BOUND
