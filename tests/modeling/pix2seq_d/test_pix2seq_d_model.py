"""The Pix2SeqD meta-architecture: label maps, conditioning, sampling glue and outputs.

References are hand-made: label maps written out pixel by pixel, an oracle denoiser that
returns the logits of the true mask (so the whole sampling + decoding + post-processing chain
must give back exactly the ground truth), and counts of encoder calls.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from seg_zoo.config import load_config
from seg_zoo.modeling.meta_arch.pix2seq_d import majority_vote
from seg_zoo.modeling.pix2seq_d.bits import int2bits

# the tiny synthetic config narrowed to a 1-layer encoder and a width-16 TransUNet
CONFIG = "configs/synthetic/pix2seq_d_R18_smoke.yaml"


def build(*opts):
    torch.manual_seed(0)
    cfg = load_config(CONFIG, list(opts))
    return build_model(cfg)


def record(
    h=64, w=64, segments=((0, slice(0, 32), slice(0, 64)), (3, slice(32, 64), slice(0, 32)))
):
    """An image record with panoptic segments given as (class, rows, cols) rectangles."""
    masks = torch.zeros(len(segments), h, w, dtype=torch.bool)
    classes = []
    for k, (c, rows, cols) in enumerate(segments):
        masks[k, rows, cols] = True
        classes.append(c)
    inst = Instances((h, w))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_masks = BitMasks(masks)
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
    return {"image": image, "instances": inst, "height": h, "width": w, "file_name": "x.png"}


def oracle_logits(label_map: torch.Tensor, groups: int = 2, n_bits: int = 16) -> torch.Tensor:
    """Softmax logits (N, groups * 256, h, w) that put all mass on the true bits."""
    k = n_bits // groups
    values = label_map  # (N, 2, h, w): with 2 groups, group g holds channel g's integer
    assert groups == 2
    onehot = torch.nn.functional.one_hot(values, 2**k).permute(0, 1, 4, 2, 3)  # N,2,256,h,w
    return (onehot.float() * 40 - 20).reshape(values.shape[0], groups * 2**k, *values.shape[-2:])


def test_label_maps_from_instances():
    model = build("MODEL.PIX2SEQ_D.OBJECT_ORDER", "shuffle")
    rec = record()
    label = model._label_maps([rec], (64, 64))  # (1, 2, 32, 32) at mask stride 2
    assert label.shape == (1, 2, 32, 32)
    classes, ids = label[0]
    assert (classes[:16] == 1).all() and (classes[16:, :16] == 4).all()
    assert (classes[16:, 16:] == 0).all()  # no segment there: void
    # two segments -> identities {1, 2} in some order; void keeps 0
    assert set(ids[:16].unique().tolist()) | set(ids[16:, :16].unique().tolist()) == {1, 2}
    assert ids[:16].unique().numel() == 1 and int(ids[:16, 0, None][0]) != int(ids[16, 0])
    assert (ids[16:, 16:] == 0).all()


def test_object_orders():
    rec = record(
        segments=(
            (0, slice(0, 32), slice(0, 64)),
            (3, slice(32, 64), slice(0, 32)),
            (5, slice(32, 64), slice(32, 64)),
        )
    )
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        ids = build()._label_maps([rec], (64, 64))[0, 1]  # "random": the image recipe
        values = sorted(set(ids.unique().tolist()) - {0})
        assert len(values) == 3 and all(1 <= v <= 31 for v in values)  # MAX_INSTANCES 32
        seen.update(values)
    assert max(seen) > 3  # drawn from 1..31, not only 1..3
    ids = build("MODEL.PIX2SEQ_D.OBJECT_ORDER", "none")._label_maps([rec], (64, 64))[0, 1]
    assert int(ids[0, 0]) == 1 and int(ids[20, 0]) == 2 and int(ids[20, 20]) == 3
    with pytest.raises(ValueError, match="OBJECT_ORDER 'sorted'"):
        build("MODEL.PIX2SEQ_D.OBJECT_ORDER", "sorted")


def test_class_beyond_num_classes_names_the_file():
    model = build()
    rec = record(segments=((9, slice(0, 8), slice(0, 8)),))
    with pytest.raises(
        ValueError, match=r"x\.png: class id 9 >= MODEL\.SEM_SEG_HEAD\.NUM_CLASSES 7"
    ):
        model._label_maps([rec], (64, 64))


def test_class_count_beyond_8_bits_is_refused():
    with pytest.raises(ValueError, match=r"300 classes.*N_BITS_LABEL 16.*at most 255"):
        build("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "300")


def test_too_many_segments_warn_and_truncate_deterministically():
    model = build("MODEL.PIX2SEQ_D.MAX_INSTANCES_PER_IMAGE", "3")
    # three segments of sizes 512, 256, 128 pixels (at 32x32 mask res: 128, 64, 32)
    segs = (
        (0, slice(0, 16), slice(0, 32)),
        (1, slice(16, 24), slice(0, 32)),
        (2, slice(24, 32), slice(0, 16)),
    )
    rec = record(segments=segs)
    with pytest.warns(UserWarning, match=r"3 segments in x\.png exceed the limit of 2"):
        label = model._label_maps([rec], (64, 64))
    classes, ids = label[0]
    # the smallest segment (class 2 -> 3) is void, class and identity
    assert (classes[12:16, :8] == 0).all() and (ids[12:16, :8] == 0).all()
    assert set(classes.unique().tolist()) == {0, 1, 2}


def test_majority_vote_by_hand():
    classes = torch.tensor([[1, 1, 2, 3], [1, 2, 2, 3], [0, 0, 3, 3]])
    ids = torch.tensor([[1, 1, 2, 3], [1, 2, 2, 3], [0, 1, 3, 3]])
    # id 1: classes 1,1,1,0 -> 1 (4 px); id 2: 2,2,2 -> 2 (3 px); id 3: 3,3,3,3 -> 3 (4 px)
    c, i = majority_vote(classes, ids, min_pixels=4, num_classes=8, max_ids=8)
    assert c.tolist() == [[1, 1, 0, 3], [1, 0, 0, 3], [0, 1, 3, 3]]  # id 2 < 4 px: void
    assert i.tolist() == [[1, 1, 0, 3], [1, 0, 0, 3], [0, 1, 3, 3]]


def test_encoder_runs_once_per_image_while_sampling():
    model = build("MODEL.PIX2SEQ_D.ITERATIONS", "5").eval()
    calls = []
    forward = model.encoder.forward
    model.encoder.forward = lambda x: calls.append(x.shape) or forward(x)
    denoiser_calls = []
    dforward = model.denoiser.forward
    model.denoiser.forward = lambda *a: denoiser_calls.append(1) or dforward(*a)
    model([record(), record()])
    assert len(calls) == 1 and calls[0][0] == 2  # one batched call for the two images
    assert len(denoiser_calls) == 5


@pytest.mark.parametrize("iterations, td", [(1, 0.0), (3, 1.0), (5, 2.0)])
def test_oracle_denoiser_gives_back_the_ground_truth(iterations, td):
    """Sampling, bit decoding, majority vote and panoptic conversion recover a known mask."""
    model = build("MODEL.PIX2SEQ_D.ITERATIONS", str(iterations), "MODEL.PIX2SEQ_D.TD", str(td))
    model.eval()
    rec = record()
    truth = torch.zeros(1, 2, 32, 32, dtype=torch.long)
    truth[0, 0, :16] = 1 + 4  # class 4 ("sky", a stuff class) -> 5
    truth[0, 1, :16] = 7
    truth[0, 0, 16:, :16] = 1 + 3  # class 3 (a thing) -> 4
    truth[0, 1, 16:, :16] = 2
    model._denoise = lambda x_in, g, fused, tokens, cond: oracle_logits(truth[: x_in.shape[0]])
    (panoptic, segments), sem_seg = (lambda o: (o["panoptic_seg"], o["sem_seg"]))(model([rec])[0])
    assert panoptic.shape == (64, 64)
    by_cat = {s["category_id"]: s for s in segments}
    assert set(by_cat) == {4, 3}
    assert by_cat[4]["isthing"] is False and by_cat[3]["isthing"] is True
    assert (panoptic[:32] == by_cat[4]["id"]).all()
    assert (panoptic[32:, :32] == by_cat[3]["id"]).all()
    assert (panoptic[32:, 32:] == 0).all()
    assert by_cat[4]["area"] == 32 * 64 and by_cat[3]["area"] == 32 * 32
    # sem_seg: one-hot over the 7 classes, nothing where the mask is void
    assert sem_seg.shape == (7, 64, 64)
    assert (sem_seg[4, :32] == 1).all() and (sem_seg[3, 32:, :32] == 1).all()
    assert (sem_seg[:, 32:, 32:] == 0).all()


def test_stuff_identities_of_one_class_are_merged():
    model = build()
    # synthetic metadata: contiguous 0-3 are things, 4-6 stuff; the map holds class + 1
    classes = torch.tensor([[6, 6, 6, 4], [6, 6, 4, 4]])  # class 5 (stuff), class 3 (thing)
    ids = torch.tensor([[5, 5, 6, 8], [5, 5, 9, 9]])  # stuff split in two; two things
    (panoptic, segments), _ = model._panoptic(classes, ids)
    stuff = [s for s in segments if not s["isthing"]]
    things = [s for s in segments if s["isthing"]]
    assert len(stuff) == 1 and stuff[0]["area"] == 5
    assert sorted(s["area"] for s in things) == [1, 2]
    assert (panoptic[:, :2] == stuff[0]["id"]).all() and panoptic[0, 2] == stuff[0]["id"]


def test_training_step_and_self_conditioning_shapes():
    model = build("MODEL.PIX2SEQ_D.SELF_COND", "x").train()
    # self-conditioning doubles the bits at the denoiser input: 16 + 16 + 16 (fused features)
    assert model.denoiser.in_channels == 16 * 2 + 16
    seen = []
    dforward = model.denoiser.forward
    model.denoiser.forward = lambda x, *a: seen.append(tuple(x.shape)) or dforward(x, *a)
    losses = model([record(), record(), record(), record()])
    loss = losses["loss_diffusion"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    # first call: the estimate for half the batch (rate 0.5), then the full batch
    assert seen == [(2, 48, 32, 32), (4, 48, 32, 32)]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def video_record(T=3, h=64, w=64):
    ids = torch.zeros(T, h, w, dtype=torch.long)
    for t in range(T):
        ids[t, 8 + 4 * t : 24 + 4 * t, 8:24] = 1
        ids[t, 40:56, 30 + 2 * t : 46 + 2 * t] = 2
    ids[:, 0, 0] = 255  # a void pixel, as DAVIS marks them
    return {
        "image": torch.randint(0, 255, (3, h, w), dtype=torch.uint8),
        "cond_ids": ids[:-1],
        "ids": ids[-1],
        "video_id": "clip",
    }


def test_video_training_conditions_on_previous_frames():
    model = build(
        "MODEL.PIX2SEQ_D.VIDEO.ENABLED", "True", "MODEL.PIX2SEQ_D.VIDEO.FRAMES_DROPOUT", "0.0",
        "MODEL.PIX2SEQ_D.OBJECT_ORDER", "shuffle",
    ).train()  # fmt: skip
    assert model.denoiser.in_channels == 16 + 16 + 2 * 16  # bits, fused, two previous frames
    target, conds = model._video_label_maps([video_record()], (64, 64))
    assert target.shape == (1, 2, 32, 32) and len(conds) == 2
    # the same object keeps the same random identity in every frame
    # object 2 covers mask pixel (24, 20) in frames 0, 1 and 2; object 1 covers (10, 8) in all
    obj2, obj1 = int(target[0, 1, 24, 20]), int(target[0, 1, 10, 8])
    assert {obj1, obj2} == {1, 2}
    for cond in conds:
        assert int(cond[0, 1, 24, 20]) == obj2 and int(cond[0, 1, 10, 8]) == obj1
    assert (target[:, 0] == 0).all()  # class-agnostic
    loss = model([video_record(), video_record()])["loss_diffusion"]
    assert torch.isfinite(loss)


def test_video_frames_dropout_zeroes_the_conditioning():
    model = build(
        "MODEL.PIX2SEQ_D.VIDEO.ENABLED", "True", "MODEL.PIX2SEQ_D.VIDEO.FRAMES_DROPOUT", "1.0"
    ).train()
    target, conds = model._video_label_maps([video_record()], (64, 64))
    assert all((c == 0).all() for c in conds) and target[0, 1].max() > 0
    # p = 0.5: each conditioning frame is dropped on its own (official: one draw per frame),
    # so over many samples both "only t-2 dropped" and "only t-1 dropped" occur
    model.frames_dropout = 0.5
    torch.manual_seed(0)
    patterns = set()
    for _ in range(40):
        _, conds = model._video_label_maps([video_record()], (64, 64))
        patterns.add(tuple(bool((c == 0).all()) for c in conds))
    assert patterns == {(False, False), (True, False), (False, True), (True, True)}
    model.eval()  # never at inference
    _, conds = model._video_label_maps([video_record()], (64, 64))
    assert all(c.max() > 0 for c in conds)


def test_video_inference_feeds_back_its_own_predictions():
    """Frame t is conditioned on the predictions for t-2 and t-1 (zeros before the start): a
    denoiser that predicts the identity map of its last conditioning frame, plus one new object
    at frame 0, must carry that object's identity through the clip."""
    model = build("MODEL.PIX2SEQ_D.VIDEO.ENABLED", "True", "MODEL.PIX2SEQ_D.ITERATIONS", "2").eval()
    seen_conds = []

    def denoise(x_in, g, fused, tokens, cond):
        seen_conds.append(cond.clone())
        last = cond[:, 16:32]  # bits of frame t-1
        label = torch.stack(
            [
                (last[:, :8] > 0).long().mul(2 ** torch.arange(8).view(1, 8, 1, 1)).sum(1),
                (last[:, 8:] > 0).long().mul(2 ** torch.arange(8).view(1, 8, 1, 1)).sum(1),
            ],
            1,
        )
        if (label == 0).all():  # first frame: an object of class 1 with identity 5
            label[:, 0, 4:12, 4:12] = 1
            label[:, 1, 4:12, 4:12] = 5
        return oracle_logits(label)

    model._denoise = denoise
    frames = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)
    out = model([{"images": frames, "height": 64, "width": 64}])[0]["video_ids"]
    assert out.shape == (4, 64, 64)
    for t in range(4):
        assert (out[t, 8:24, 8:24] == 5).all() and int((out[t] == 5).sum()) == 256
        assert int((out[t] != 0).sum()) == 256
    # conditioning at frame 0 is all zeros (bits of 0 = -b everywhere)
    assert torch.allclose(seen_conds[0], torch.full_like(seen_conds[0], -0.1))
    expected_bits = int2bits(torch.tensor(5), 8)
    assert ((seen_conds[-1][0, 24:32, 5, 5] > 0).float() == expected_bits).all()


def test_untrained_model_outputs_well_formed_results():
    model = build("MODEL.PIX2SEQ_D.ITERATIONS", "2").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model([record(48, 80)])[0]
    panoptic, segments = out["panoptic_seg"]
    assert panoptic.shape == (48, 80) and out["sem_seg"].shape == (7, 48, 80)
    ids = set(panoptic.unique().tolist()) - {0}
    assert ids == {s["id"] for s in segments}
