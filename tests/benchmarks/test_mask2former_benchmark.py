"""benchmarks/mask2former.py, tiny: reference mode agrees with seg_zoo, and the table prints."""

import pytest
import torch
from _benchmark_loader import load_benchmark

bench = load_benchmark("mask2former")

# A small model from the official R50 config: one encoder layer, three decoder layers, ten
# queries, seven classes, and thresholds at zero so that random weights still give several
# panoptic segments (stuff and things) and instances to compare.
TINY = [
    "DATASETS.TRAIN",
    "('seg_zoo_benchmark_test_unregistered',)",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "7",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS",
    "1",
    "MODEL.MASK_FORMER.DEC_LAYERS",
    "3",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES",
    "10",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD",
    "64",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS",
    "256",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD",
    "0.0",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD",
    "0.0",
    "TEST.DETECTIONS_PER_IMAGE",
    "12",
]


@pytest.fixture(scope="module")
def tiny_model():
    cfg = bench.build_benchmark_cfg("r50", "all", "cpu", TINY)
    torch.manual_seed(0)
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    # Random init scores every query alike; a wide class head spreads the queries over the
    # classes, so panoptic inference sees several things and merges stuff segments.
    with torch.no_grad():
        model.sem_seg_head.predictor.class_embed.weight.normal_(0.0, 0.5)
    return model


def test_tiny_metadata_has_things_and_stuff(tiny_model):
    # 7 classes -> 4 things (80/133 of them), 3 stuff classes.
    assert sorted(tiny_model.thing_class_ids) == [0, 1, 2, 3]


def test_reference_mode_swaps_and_restores(tiny_model, monkeypatch):
    calls = []
    original_reference = bench.reference_ms_deform_attn

    def counting(*args):
        calls.append(1)
        return original_reference(*args)

    monkeypatch.setattr(bench, "reference_ms_deform_attn", counting)
    msda = bench._MSDA_MODULE
    before = msda.ms_deform_attn
    inputs = bench.make_inference_input(64)
    bench.run_inference(tiny_model, inputs)
    assert calls == []
    with bench.reference_mode():
        # The op and the three post-processing functions are the reference ones here...
        assert bench._META_ARCH_MODULE.panoptic_inference is bench.reference_panoptic_inference
        bench.run_inference(tiny_model, inputs)
    # ...one call per encoder layer, and everything is restored afterwards.
    assert len(calls) == 1
    assert msda.ms_deform_attn is before
    assert bench._META_ARCH_MODULE.panoptic_inference.__module__.endswith("postprocessing")


def test_reference_mode_gives_the_same_outputs(tiny_model):
    inputs = bench.make_inference_input(64, seed=1)
    (ours,) = bench.run_inference(tiny_model, inputs)
    with bench.reference_mode():
        (ref,) = bench.run_inference(tiny_model, inputs)

    assert ours["sem_seg"].shape == (7, 64, 64)
    torch.testing.assert_close(ours["sem_seg"], ref["sem_seg"], rtol=1e-4, atol=1e-5)

    seg, info = ours["panoptic_seg"]
    ref_seg, ref_info = ref["panoptic_seg"]
    assert info == ref_info
    assert torch.equal(seg, ref_seg)
    # The comparison is only worth something if there are segments of both kinds.
    assert {s["isthing"] for s in info} == {True, False}, info

    inst, ref_inst = ours["instances"], ref["instances"]
    assert len(inst) > 0
    assert inst.pred_classes.tolist() == ref_inst.pred_classes.tolist()
    torch.testing.assert_close(inst.scores, ref_inst.scores, rtol=1e-4, atol=1e-6)
    assert torch.equal(inst.pred_masks, ref_inst.pred_masks)
    torch.testing.assert_close(inst.pred_boxes.tensor, ref_inst.pred_boxes.tensor)


def test_training_batch_is_plausible():
    batch = bench.make_training_batch(48, 2, num_classes=7, seed=3)
    assert len(batch) == 2
    for x in batch:
        assert x["image"].dtype == torch.uint8 and x["image"].shape == (3, 48, 48)
        masks = x["instances"].gt_masks
        assert masks.dtype == torch.bool and masks.shape[1:] == (48, 48)
        assert 2 <= masks.shape[0] <= 6 and masks.flatten(1).any(1).all()
        classes = x["instances"].gt_classes
        assert classes.shape == (masks.shape[0],) and 0 <= classes.min() and classes.max() < 7


@pytest.mark.slow  # builds four tiny models and runs a training step in both modes (~20 s)
def test_run_benchmark_and_table_print():
    logs = []
    rows = bench.run_benchmark(
        device="cpu",
        models=["r50"],
        # The warm-up step on smaller images exercises the CPU default's path.
        sizes={"semantic": 64, "all": 64, "train": 64, "train_warmup": 32},
        warmup=0,
        repeats=1,
        train_warmup=1,
        train_repeats=1,
        opts=TINY,
        log=logs.append,
    )
    assert [r.task for r in rows] == [
        "infer sem_seg bs1",
        "infer all three bs1",
        "train step bs2 fp32",
    ]
    for r in rows:
        assert r.ours_ms > 0 and r.ref_ms > 0
    assert rows[2].peak_mib is not None and rows[2].peak_mib >= 0
    table = bench.format_table(rows, "cpu", ["a note"])
    lines = table.splitlines()
    assert lines[0].startswith("| model | task | size | seg_zoo ms | reference ms")
    assert len(lines) == 2 + len(rows) + 1
    expected_ratio = f"{rows[0].ref_ms / rows[0].ours_ms:.2f}x"
    assert lines[2].startswith("| r50 | infer sem_seg bs1 | 64x64 |") and expected_ratio in lines[2]
    assert lines[-1] == "a note"
    assert "H100" not in table
    assert "H100 targets" in bench.format_table(rows, "cuda")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown model 'r101'"):
        bench.build_benchmark_cfg("r101", "all")
    with pytest.raises(ValueError, match="KEY VALUE"):
        bench.build_benchmark_cfg("r50", "all", opts=["MODEL.DEVICE"])
    with pytest.raises(SystemExit):
        bench._parse_args(["--repeats", "0"])
