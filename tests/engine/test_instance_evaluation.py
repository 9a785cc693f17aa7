"""InstanceSegEvaluator scores models whose thing ids are scattered over all classes."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from seg_zoo.evaluation import InstanceSegEvaluator

NAME = "_seg_zoo_test_scattered_things"


def _square(h, w, y0, x0, size):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0 : y0 + size, x0 : x0 + size] = 1
    return m


@pytest.fixture
def dataset(tmp_path):
    h, w = 40, 50
    masks = {(1, 5): _square(h, w, 2, 3, 10), (1, 9): _square(h, w, 20, 25, 12)}
    annotations = []
    for k, ((image_id, cat), m) in enumerate(masks.items()):
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode("ascii")
        ys, xs = np.nonzero(m)
        bbox = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        annotations.append(
            {
                "id": k + 1,
                "image_id": image_id,
                "category_id": cat,
                "segmentation": rle,
                "area": int(m.sum()),
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": h, "width": w}],
        "annotations": annotations,
        "categories": [{"id": 5, "name": "five"}, {"id": 9, "name": "nine"}],
    }
    json_file = os.path.join(tmp_path, "instances.json")
    with open(json_file, "w") as f:
        json.dump(coco, f)
    DatasetCatalog.register(NAME, lambda: [])
    # things 5 and 9 sit at contiguous ids 2 and 4 of a 6-class panoptic label space
    MetadataCatalog.get(NAME).set(
        json_file=json_file,
        thing_classes=["five", "nine"],
        thing_dataset_id_to_contiguous_id={5: 2, 9: 4},
        evaluator_type="ade20k_panoptic_seg",
    )
    yield masks, (h, w)
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def test_ground_truth_as_prediction_scores_100(dataset, tmp_path):
    masks, (h, w) = dataset
    evaluator = InstanceSegEvaluator(NAME, tasks=("segm",), output_dir=str(tmp_path))
    evaluator.reset()
    inst = Instances((h, w))
    inst.pred_masks = torch.from_numpy(np.stack([masks[(1, 5)], masks[(1, 9)], masks[(1, 5)]]))
    inst.pred_classes = torch.tensor([2, 4, 0])  # class 0 is stuff: not scored
    inst.scores = torch.tensor([0.9, 0.8, 0.99])
    inst.pred_boxes = Boxes(torch.zeros(3, 4))  # as Mask2Former's inference: boxes unused
    evaluator.process([{"image_id": 1}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP-five"] == pytest.approx(100.0)
    assert results["segm"]["AP-nine"] == pytest.approx(100.0)


def test_wrong_class_scores_zero(dataset, tmp_path):
    masks, (h, w) = dataset
    evaluator = InstanceSegEvaluator(NAME, tasks=("segm",), output_dir=str(tmp_path))
    evaluator.reset()
    inst = Instances((h, w))
    inst.pred_masks = torch.from_numpy(np.stack([masks[(1, 5)], masks[(1, 9)]]))
    inst.pred_classes = torch.tensor([4, 2])  # swapped
    inst.scores = torch.tensor([0.9, 0.8])
    inst.pred_boxes = Boxes(torch.zeros(2, 4))
    evaluator.process([{"image_id": 1}], [{"instances": inst}])
    assert evaluator.evaluate()["segm"]["AP"] == pytest.approx(0.0)
