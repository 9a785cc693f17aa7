"""The builtin class lists against facts read off the official Mask2Former files.

Every expected value below was copied by hand from facebookresearch/Mask2Former
(`mask2former/data/datasets/register_*.py`, `datasets/ade20k_instance_catid_mapping.txt`), so
these tests fail if a list is truncated, reordered or mis-transcribed.
"""

import pytest

from seg_zoo.data.datasets.categories import (
    ADE20K_150_CATEGORIES,
    ADE20K_FULL_CATEGORIES,
    ADE20K_INSTANCE_CATEGORIES,
    COCO_STUFF_171_CATEGORIES,
    MAPILLARY_VISTAS_PANOPTIC_CATEGORIES,
    MAPILLARY_VISTAS_SEM_SEG_CATEGORIES,
)


def _ids(cats):
    return [c["id"] for c in cats]


@pytest.mark.parametrize(
    "cats, count",
    [
        (ADE20K_150_CATEGORIES, 150),
        (ADE20K_INSTANCE_CATEGORIES, 100),
        (ADE20K_FULL_CATEGORIES, 847),
        (MAPILLARY_VISTAS_PANOPTIC_CATEGORIES, 65),
        (COCO_STUFF_171_CATEGORIES, 171),
    ],
)
def test_counts_and_unique_ids(cats, count):
    assert len(cats) == count
    assert len(set(_ids(cats))) == count
    assert len({c["name"] for c in cats}) == count


def test_ade20k_150():
    assert _ids(ADE20K_150_CATEGORIES) == list(range(150))
    assert ADE20K_150_CATEGORIES[0] == {
        "id": 0,
        "name": "wall",
        "isthing": 0,
        "color": [120, 120, 120],
    }
    assert ADE20K_150_CATEGORIES[12] == {
        "id": 12,
        "name": "person",
        "isthing": 1,
        "color": [150, 5, 61],
    }
    assert ADE20K_150_CATEGORIES[8]["name"] == "window "  # sic, trailing space in the official
    assert ADE20K_150_CATEGORIES[149] == {
        "id": 149,
        "name": "flag",
        "isthing": 1,
        "color": [92, 0, 255],
    }
    assert sum(c["isthing"] for c in ADE20K_150_CATEGORIES) == 100


def test_ade20k_instance_matches_catid_mapping():
    # Rows of ade20k_instance_catid_mapping.txt (instance class -> SceneParse150 class, both
    # 1-based); the instance list's entry k-1 must carry SceneParse id - 1.
    mapping_rows = {1: 8, 2: 9, 3: 11, 4: 13, 96: 145, 97: 147, 98: 148, 99: 149, 100: 150}
    for ins, sem in mapping_rows.items():
        assert ADE20K_INSTANCE_CATEGORIES[ins - 1]["id"] == sem - 1
    assert ADE20K_INSTANCE_CATEGORIES[0] == {"id": 7, "name": "bed"}
    assert ADE20K_INSTANCE_CATEGORIES[1] == {"id": 8, "name": "windowpane"}
    assert ADE20K_INSTANCE_CATEGORIES[3] == {"id": 12, "name": "person"}
    assert ADE20K_INSTANCE_CATEGORIES[-1] == {"id": 149, "name": "flag"}
    # The 150-class isthing flags and the instance classes describe the same 100 classes.
    assert _ids(ADE20K_INSTANCE_CATEGORIES) == [
        c["id"] for c in ADE20K_150_CATEGORIES if c["isthing"]
    ]


def test_ade20k_full():
    assert [c["trainId"] for c in ADE20K_FULL_CATEGORIES] == list(range(847))
    assert ADE20K_FULL_CATEGORIES[0] == {"id": 2978, "name": "wall", "trainId": 0}
    person = ADE20K_FULL_CATEGORIES[11]
    assert (person["id"], person["name"].split(",")[0]) == (1831, "person")
    assert ADE20K_FULL_CATEGORIES[79]["id"] == 591  # "computer, computing machine, ..."
    assert ADE20K_FULL_CATEGORIES[500] == {"id": 430, "name": "cat", "trainId": 500}
    assert ADE20K_FULL_CATEGORIES[846] == {
        "id": 3148,
        "name": "adding machine, totalizer, totaliser",
        "trainId": 846,
    }


def test_mapillary_vistas():
    assert len(MAPILLARY_VISTAS_SEM_SEG_CATEGORIES) == 66
    evaluated = [c for c in MAPILLARY_VISTAS_SEM_SEG_CATEGORIES if c["evaluate"]]
    assert len(evaluated) == 65
    assert MAPILLARY_VISTAS_SEM_SEG_CATEGORIES[-1]["name"] == "void--unlabeled"
    assert not MAPILLARY_VISTAS_SEM_SEG_CATEGORIES[-1]["evaluate"]
    road = MAPILLARY_VISTAS_SEM_SEG_CATEGORIES[13]
    assert (road["readable"], road["name"], road["color"], road["instances"]) == (
        "Road",
        "construction--flat--road",
        [128, 64, 128],
        False,
    )
    pan = MAPILLARY_VISTAS_PANOPTIC_CATEGORIES
    assert _ids(pan) == list(range(1, 66))
    assert pan[0] == {
        "id": 1,
        "name": "Bird",
        "isthing": 1,
        "color": [165, 42, 42],
        "supercategory": "animal--bird",
    }
    assert pan[19]["name"] == "Person" and pan[19]["isthing"] == 1
    assert pan[64]["name"] == "Ego Vehicle" and pan[64]["isthing"] == 0
    assert sum(c["isthing"] for c in pan) == 37
    # The two official views agree on names, colours and which classes have instances.
    assert [c["readable"] for c in evaluated] == [c["name"] for c in pan]
    assert [c["color"] for c in evaluated] == [c["color"] for c in pan]
    assert [int(c["instances"]) for c in evaluated] == [c["isthing"] for c in pan]


def test_coco_stuff():
    cats = COCO_STUFF_171_CATEGORIES
    assert cats[0]["id"] == 1 and cats[0]["name"] == "person" and cats[0]["isthing"] == 1
    assert cats[0]["color"] == [220, 20, 60]
    assert cats[79]["name"] == "toothbrush" and cats[79]["id"] == 90
    assert cats[80] == {"id": 92, "name": "banner", "isthing": 0, "supercategory": "textile"}
    assert cats[-1]["id"] == 182 and cats[-1]["name"] == "wood"
    assert sum(c["isthing"] for c in cats) == 80
    assert _ids(cats) == sorted(_ids(cats))
