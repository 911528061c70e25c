"""Boxes through ultralytics' albumentations wrapper (the training path of a detst policy): boxes
flush with each border, tiny boxes and crops keep class labels in step with boxes."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from ultralytics.data.augment import Albumentations
from ultralytics.utils.instance import Instances

W = H = 64
CASES = {
    "flush_left": [0, 10, 20, 30],
    "flush_right": [44, 10, 64, 30],
    "flush_top": [10, 0, 30, 20],
    "flush_bottom": [10, 44, 30, 64],
    "full_image": [0, 0, 64, 64],
    "tiny_1px": [30, 30, 31, 31],
}
POLICIES = {
    "pixel_only": [A.RandomBrightnessContrast(p=1.0), A.GaussNoise(std_range=(0.05, 0.1), p=1.0)],
    "spatial_identity": [A.Affine(scale=1.0, p=1.0)],
    "spatial_flip": [A.HorizontalFlip(p=1.0)],
    "spatial_crop": [A.RandomCrop(48, 48, p=1.0)],
}


def _labels(boxes: list[list[float]]) -> dict:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    return {"img": np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8),
            "cls": np.arange(len(xyxy), dtype=np.float32).reshape(-1, 1),
            "instances": Instances(xyxy, segments=np.zeros((0, 1000, 2), np.float32), bbox_format="xyxy",
                                   normalized=False)}


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_boxes_and_labels_stay_in_step(policy, case):
    aug = Albumentations(p=1.0, transforms=POLICIES[policy])
    assert aug.transform is not None
    boxes = [CASES[case], [20, 20, 40, 40]]
    out = aug(_labels(boxes))
    inst = out["instances"]
    assert len(out["cls"]) == len(inst.bboxes)                        # never out of step
    h, w = out["img"].shape[:2]
    inst.convert_bbox("xyxy")
    if inst.normalized:
        inst.denormalize(w, h)
    b = inst.bboxes
    assert (b[:, [0, 2]] >= -1e-3).all() and (b[:, [0, 2]] <= w + 1e-3).all()
    assert (b[:, [1, 3]] >= -1e-3).all() and (b[:, [1, 3]] <= h + 1e-3).all()
    if policy in ("pixel_only", "spatial_identity", "spatial_flip"):
        assert len(b) == 2                                            # nothing lost without a crop


def test_empty_image_without_boxes_survives_every_policy():
    for transforms in POLICIES.values():
        out = Albumentations(p=1.0, transforms=transforms)(_labels([]))
        assert len(out["cls"]) == 0 and len(out["instances"].bboxes) == 0
