"""Tests of seg_zoo.data.augmentation: SSD colour distortion and the shared mapper helpers.

The SSD distortion is detectron2's PointRend ``ColorAugSSDTransform`` (the one the official
Mask2Former trains with), re-exported. It is checked against hand-worked HSV/RGB arithmetic on
constant images, with its ``random`` draws scripted, so that seg_zoo's configuration of it (the
SSD ranges, the step order, BGR/RGB handling, geometry left alone) is pinned down.
"""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from PIL import Image

from seg_zoo.data.augmentation import (
    ColorAugSSDTransform,
    RandomChoice,
    build_flip_augmentation,
    build_resize_crop_augmentations,
    build_resize_crop_resize_augmentation,
    pad_bottom_right,
    pad_to_divisibility,
    read_image_checked,
)

# A constant BGR image: B=200, G=150, R=100. By hand (OpenCV uint8 HSV): V = 200,
# S = 255 * (200 - 100) / 200 = 127.5, H = (240 + 60 * (R - G) / (V - min)) / 2 = 105.
BGR = (200, 150, 100)


def constant(bgr, h=4, w=5):
    return np.broadcast_to(np.array(bgr, dtype=np.uint8), (h, w, 3)).copy()


def assert_constant_close(img, bgr, tol):
    assert img.dtype == np.uint8 and img.shape == (4, 5, 3)
    diff = np.abs(img.astype(int) - np.array(bgr)[None, None])
    assert diff.max() <= tol, (img[0, 0], bgr)


class ScriptedRng:
    """Stands in for ``random``: returns queued values and records which calls were made."""

    def __init__(self, randrange=(), uniform=(), randint=()):
        self.queues = {"randrange": list(randrange), "uniform": list(uniform)}
        self.queues["randint"] = list(randint)
        self.calls = []

    def randrange(self, n):
        assert n == 2
        self.calls.append("randrange")
        return self.queues["randrange"].pop(0)

    def uniform(self, a, b):
        self.calls.append(("uniform", a, b))
        return self.queues["uniform"].pop(0)

    def randint(self, a, b):
        self.calls.append(("randint", a, b))
        return self.queues["randint"].pop(0)


@pytest.fixture
def script(monkeypatch):
    """Make the transform draw from a ScriptedRng (it uses the global ``random`` module)."""
    import detectron2.projects.point_rend.color_augmentation as module

    def install(**queues):
        rng = ScriptedRng(**queues)
        monkeypatch.setattr(module, "random", rng)
        return rng

    return install


def test_brightness_matches_hand_values(script):
    t = ColorAugSSDTransform("BGR")
    # 100 + 20.7 = 120.7 truncates to 120; 200 + 80 clips to 255; 100 - 120 clips to 0.
    script(randrange=[1, 1, 1], uniform=[20.7, 80, -120])
    assert_constant_close(t.brightness(constant(BGR)), (220, 170, 120), 0)
    assert_constant_close(t.brightness(constant(BGR)), (255, 230, 180), 0)
    assert_constant_close(t.brightness(constant(BGR)), (80, 30, 0), 0)
    # A lost coin leaves the image alone and draws no value.
    rng = script(randrange=[0])
    assert_constant_close(t.brightness(constant(BGR)), BGR, 0)
    assert rng.calls == ["randrange"]


def test_contrast_matches_hand_values(script):
    t = ColorAugSSDTransform("BGR")
    # 200 * 1.3 = 260 clips; 150 * 1.3 = 195; 100 * 1.3 = 130.
    script(randrange=[1, 1], uniform=[1.3, 0.5])
    assert_constant_close(t.contrast(constant(BGR)), (255, 195, 130), 0)
    assert_constant_close(t.contrast(constant(BGR)), (100, 75, 50), 0)


def test_saturation_matches_hand_hsv(script):
    t = ColorAugSSDTransform("BGR")
    script(randrange=[1, 1], uniform=[0.5, 0.0])
    # S 127.5 -> about 64 after x0.5; V stays 200, so min = 200 * (1 - 64/255) = 149.8; hue
    # 210 deg lies between cyan and blue: G = min + (max - min) * (240 - 210) / 60 = 174.9.
    assert_constant_close(t.saturation(constant(BGR)), (200, 175, 150), 1)
    # Factor 0 gives grey at V.
    assert_constant_close(t.saturation(constant(BGR)), (200, 200, 200), 0)


def test_hue_matches_hand_hsv(script):
    t = ColorAugSSDTransform("BGR")
    script(randrange=[1, 1, 1], randint=[30, 90, 180])
    # H 105 + 30 = 135 units = 270 deg, between blue and magenta: B = max = 200, G = min = 100,
    # R = min + (max - min) * (270 - 240) / 60 = 150.
    assert_constant_close(t.hue(constant(BGR)), (200, 100, 150), 1)
    # 105 + 90 = 195 wraps to 15 units = 30 deg, between red and yellow: R = 200, B = 100,
    # G = 100 + 100 * 30 / 60 = 150.
    assert_constant_close(t.hue(constant(BGR)), (100, 150, 200), 1)
    # A full turn is the identity.
    assert_constant_close(t.hue(constant(BGR)), BGR, 1)


def test_full_distortion_on_constant_image_matches_hand_computation(script):
    # Coins: brightness on, order "saturation, hue, contrast", saturation on, hue on,
    # contrast on. Values: brightness +10, saturation x0, hue +30, contrast x1.2.
    rng = script(randrange=[1, 0, 1, 1, 1], uniform=[10.0, 0.0, 1.2], randint=[30])
    out = ColorAugSSDTransform("BGR").apply_image(constant(BGR))
    # By hand: +10 -> (210, 160, 110); saturation 0 -> grey (210, 210, 210); hue of grey
    # stays grey; x1.2 -> 252.
    assert_constant_close(out, (252, 252, 252), 1)
    # The SSD ranges the official configuration uses, drawn in the SSD order.
    assert rng.calls == [
        "randrange",
        ("uniform", -32, 32),
        "randrange",
        "randrange",
        ("uniform", 0.5, 1.5),
        "randrange",
        ("randint", -18, 18),
        "randrange",
        ("uniform", 0.5, 1.5),
    ]


def test_contrast_first_order_and_rgb_input(script):
    # Brightness off; order "contrast, saturation, hue"; contrast x0.5 on, the rest off.
    script(randrange=[0, 1, 1, 0, 0], uniform=[0.5])
    rgb = constant(BGR[::-1])
    out = ColorAugSSDTransform("RGB").apply_image(rgb)
    # x0.5 of R=100, G=150, B=200 in RGB order.
    assert_constant_close(out, (50, 75, 100), 0)


def test_segmentation_and_coords_untouched():
    t = ColorAugSSDTransform("BGR")
    seg = np.arange(20, dtype=np.uint8).reshape(4, 5)
    coords = np.array([[1.5, 2.0], [3.0, 0.5]])
    np.testing.assert_array_equal(t.apply_segmentation(seg.copy()), seg)
    np.testing.assert_array_equal(t.apply_coords(coords.copy()), coords)
    aug_input = T.AugInput(constant(BGR), sem_seg=seg.copy())
    T.AugmentationList([ColorAugSSDTransform("BGR", brightness_delta=0)])(aug_input)
    np.testing.assert_array_equal(aug_input.sem_seg, seg)


def _train_cfg():
    from detectron2.config import get_cfg

    from seg_zoo.config import add_seg_zoo_config

    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.RANDOM_FLIP = "none"
    return cfg


def test_color_aug_from_config_and_bad_format_named():
    cfg = _train_cfg()
    cfg.INPUT.FORMAT = "RGB"
    augs = build_resize_crop_augmentations(cfg, category_area_crop=False)
    (color,) = [a for a in augs if isinstance(a, ColorAugSSDTransform)]
    assert color.is_rgb
    cfg.INPUT.FORMAT = "YUV"
    with pytest.raises(ValueError, match="INPUT.FORMAT.*'YUV'"):
        build_resize_crop_augmentations(cfg, category_area_crop=False)


def test_padding_helpers():
    assert pad_to_divisibility((17, 32), 16) == (32, 32)
    assert pad_to_divisibility((17, 33), -1) == (17, 33)
    t = torch.ones(2, 3, dtype=torch.uint8)
    out = pad_bottom_right(t, 4, 5, value=7)
    expected = torch.full((4, 5), 7, dtype=torch.uint8)
    expected[:2, :3] = 1
    assert torch.equal(out, expected)


def test_flip_from_config():
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.INPUT.RANDOM_FLIP = "none"
    assert build_flip_augmentation(cfg) == []
    cfg.INPUT.RANDOM_FLIP = "vertical"
    (flip,) = build_flip_augmentation(cfg)
    assert flip.vertical and not flip.horizontal
    cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ValueError, match="RANDOM_FLIP.*'diagonal'"):
        build_flip_augmentation(cfg)


def test_random_choice_frequencies_and_bad_probs():
    class Mark(T.Augmentation):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def get_transform(self, image):
            return T.ColorTransform(lambda img, v=self.value: np.full_like(img, v))

    choice = RandomChoice([[Mark(1)], [Mark(2), Mark(3)]], [0.25, 0.75])
    np.random.seed(0)
    seen = []
    for _ in range(2000):
        inp = T.AugInput(np.zeros((2, 2, 3), np.uint8))
        tfms = choice(inp)
        seen.append((len(tfms.transforms), int(inp.image[0, 0, 0])))
    # branch 2 runs both of its augmentations, in order (3 is written last)
    assert set(seen) == {(1, 1), (2, 3)}
    share = sum(n == 2 for n, _ in seen) / len(seen)
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / 2000) ** 0.5  # 4 binomial standard deviations
    assert RandomChoice([[Mark(1)], [Mark(2)]]).probs == [0.5, 0.5]
    for bad in ([1.0], [-1.0, 2.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="RandomChoice: probs"):
            RandomChoice([[Mark(1)], [Mark(2)]], bad)
    with pytest.raises(ValueError, match="at least one branch"):
        RandomChoice([])


def _resize_crop_resize_cfg(**changes):
    from detectron2.config import get_cfg

    from seg_zoo.config import add_seg_zoo_config

    cfg = get_cfg()
    add_seg_zoo_config(cfg)
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(range(480, 801, 32))
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 1333
    for key, value in changes.items():
        setattr(cfg.INPUT.RESIZE_CROP_RESIZE, key, value)
    return cfg


def test_resize_crop_resize_sizes():
    """The Swin COCO recipe on a 480 x 640 image, sizes checked against the recipe by hand."""
    aug = build_resize_crop_resize_augmentation(_resize_crop_resize_cfg())
    np.random.seed(0)
    cropped = 0
    for _ in range(400):
        inp = T.AugInput(np.zeros((480, 640, 3), np.uint8))
        tfms = aug(inp).transforms
        h, w = inp.image.shape[:2]
        # the last step is always the multi-scale resize: short side one of 480..800
        # (the long side, <= 800 * 600 / 384 = 1250, never reaches 1333)
        assert min(h, w) in range(480, 801, 32)
        if len(tfms) == 1:
            assert isinstance(tfms[0], T.ResizeTransform)
            assert round(max(h, w) / min(h, w), 2) == round(640 / 480, 2)
            continue
        cropped += 1
        first, crop, last = tfms
        assert isinstance(first, T.ResizeTransform) and isinstance(last, T.ResizeTransform)
        assert isinstance(crop, T.CropTransform)
        assert (first.h, first.w) == (480, 640)
        assert first.new_h in (400, 500, 600)
        assert first.new_w == int(640 * first.new_h / 480 + 0.5)
        assert 384 <= crop.h <= min(first.new_h, 600) and 384 <= crop.w <= min(first.new_w, 600)
        assert 0 <= crop.y0 <= first.new_h - crop.h and 0 <= crop.x0 <= first.new_w - crop.w
        assert (last.h, last.w) == (crop.h, crop.w)
    assert abs(cropped / 400 - 0.5) < 4 * (0.25 / 400) ** 0.5


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("PROB", 1.5, "PROB must be in"),
        ("MIN_SIZE", (), "MIN_SIZE must list positive"),
        ("CROP_SIZE", (600, 384), r"CROP_SIZE must be \(lo, hi\)"),
        ("CROP_SIZE", (384,), r"CROP_SIZE must be \(lo, hi\)"),
    ],
)
def test_resize_crop_resize_bad_config(key, value, match):
    with pytest.raises(ValueError, match=f"INPUT.RESIZE_CROP_RESIZE.{match}"):
        build_resize_crop_resize_augmentation(_resize_crop_resize_cfg(**{key: value}))


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(OSError, match="corrupt.jpg"):
        read_image_checked(str(bad), format="BGR")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image_checked(str(tmp_path / "missing.png"), format="BGR")
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((3, 4), 9, np.uint8)).save(gray)
    assert read_image_checked(str(gray), format="BGR").shape == (3, 4, 3)
