"""Table tests of detst.boxes: size-bucket edges, format round trips, clipping, IoU."""

from __future__ import annotations

import numpy as np
import pytest

from detst.boxes import (
    MEDIUM_MAX_AREA,
    SIZE_BUCKETS,
    SMALL_MAX_AREA,
    areas_xyxy,
    clip_xyxy,
    cxcywh_norm_to_xyxy,
    ioa_matrix,
    iou_matrix,
    size_bucket,
    size_bucket_index,
    valid_mask,
    xywh_to_xyxy,
    xyxy_to_cxcywh_norm,
    xyxy_to_xywh,
)
from detst.structures import Detections


def test_bucket_limits_are_coco_32_and_96_squared():
    assert SMALL_MAX_AREA == 32 * 32 == 1024
    assert MEDIUM_MAX_AREA == 96 * 96 == 9216
    assert SIZE_BUCKETS == ("small", "medium", "large")


@pytest.mark.parametrize("area, bucket", [
    (0.0, "small"),
    (1.0, "small"),
    (1023.999, "small"),
    (1024.0, "medium"),          # exactly 32²: COCO small is area < 32²
    (1024.001, "medium"),
    (9215.999, "medium"),
    (9216.0, "large"),           # exactly 96²: COCO medium is area < 96²
    (1e9, "large"),
])
def test_size_bucket_edges_exactly_at_32_and_96_squared(area, bucket):
    assert size_bucket(area) == bucket
    assert SIZE_BUCKETS[int(size_bucket_index(np.array([area]))[0])] == bucket


@pytest.mark.parametrize("wh, bucket", [((32, 32), "medium"), ((31, 32), "small"), ((96, 96), "large"),
                                         ((95, 96), "medium"), ((1024, 1), "medium")])
def test_bucket_of_a_box_uses_its_pixel_area(wh, bucket):
    box = np.array([[10, 20, 10 + wh[0], 20 + wh[1]]], np.float32)
    assert size_bucket(float(areas_xyxy(box)[0])) == bucket
    assert size_bucket(float(Detections(box, [1.0], [0]).area[0])) == bucket


def test_size_bucket_index_empty_in_empty_out():
    out = size_bucket_index(np.zeros(0))
    assert out.shape == (0,) and out.dtype == np.int64


@pytest.mark.parametrize("xyxy, area", [
    (np.zeros((0, 4)), np.zeros(0)),
    ([[0, 0, 10, 5]], [50.0]),
    ([[10, 10, 5, 20]], [0.0]),      # inverted box has zero area, never negative
    ([[2.5, 1.0, 3.0, 3.0]], [1.0]),
])
def test_areas_xyxy(xyxy, area):
    np.testing.assert_allclose(areas_xyxy(np.asarray(xyxy, float)), area)


BOXES = np.array([[0, 0, 10, 10], [3.5, 7.25, 50.5, 60.0], [99, 0, 100, 80], [12.3, 45.6, 12.3, 45.6]])


@pytest.mark.parametrize("xyxy", [np.zeros((0, 4)), BOXES[:1], BOXES])
def test_xywh_round_trip(xyxy):
    xywh = xyxy_to_xywh(xyxy)
    assert xywh.shape == xyxy.shape
    np.testing.assert_allclose(xywh_to_xyxy(xywh), xyxy, atol=1e-12)
    np.testing.assert_allclose(xywh[:, 2:], xyxy[:, 2:] - xyxy[:, :2])


def test_xywh_known_values():
    np.testing.assert_allclose(xyxy_to_xywh([[10, 20, 40, 60]]), [[10, 20, 30, 40]])
    np.testing.assert_allclose(xywh_to_xyxy([[10, 20, 30, 40]]), [[10, 20, 40, 60]])


@pytest.mark.parametrize("xyxy", [np.zeros((0, 4)), BOXES[:1], BOXES])
@pytest.mark.parametrize("wh", [(100, 80), (640, 480), (1, 1)])
def test_cxcywh_norm_round_trip(xyxy, wh):
    n = xyxy_to_cxcywh_norm(xyxy, *wh)
    assert n.shape == xyxy.shape
    np.testing.assert_allclose(cxcywh_norm_to_xyxy(n, *wh), xyxy, atol=1e-9)


def test_cxcywh_norm_known_values():
    np.testing.assert_allclose(xyxy_to_cxcywh_norm([[0, 0, 100, 80]], 100, 80), [[0.5, 0.5, 1.0, 1.0]])
    np.testing.assert_allclose(cxcywh_norm_to_xyxy([[0.5, 0.5, 1.0, 1.0]], 100, 80), [[0, 0, 100, 80]], atol=0)
    np.testing.assert_allclose(xyxy_to_cxcywh_norm([[10, 20, 30, 60]], 100, 80), [[0.2, 0.5, 0.2, 0.5]])


@pytest.mark.parametrize("box, clipped", [
    ([-0.3, 5, 10, 20], [0, 5, 10, 20]),                   # a third of a pixel outside on the left
    ([5, -0.3, 10, 20], [5, 0, 10, 20]),
    ([90, 5, 100.3, 20], [90, 5, 100, 20]),                # a third of a pixel outside on the right
    ([5, 70, 10, 80.3], [5, 70, 10, 80]),
    ([-5, -5, 200, 200], [0, 0, 100, 80]),
    ([10, 10, 20, 20], [10, 10, 20, 20]),                  # inside: untouched
])
def test_box_a_third_pixel_outside_is_clipped(box, clipped):
    out = clip_xyxy(np.array([box]), 100, 80)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([clipped], np.float32))


def test_clip_empty_in_empty_out_and_input_untouched():
    assert clip_xyxy(np.zeros((0, 4)), 10, 10).shape == (0, 4)
    a = np.array([[-1.0, -1.0, 20.0, 20.0]], np.float32)
    clip_xyxy(a, 10, 10)
    np.testing.assert_array_equal(a, [[-1, -1, 20, 20]])


@pytest.mark.parametrize("box, min_size, ok", [
    ([0, 0, 1, 1], 1.0, True),           # exactly min_size is kept
    ([0, 0, 0.99, 5], 1.0, False),
    ([0, 0, 5, 0.99], 1.0, False),
    ([0, 0, 0, 0], 0.0, True),
    ([5, 5, 4, 6], 0.0, False),          # inverted
    ([0, 0, 2, 2], 3.0, False),
])
def test_valid_mask(box, min_size, ok):
    assert valid_mask(np.array([box], float), min_size).tolist() == [ok]


def test_valid_mask_empty():
    assert valid_mask(np.zeros((0, 4))).shape == (0,)


@pytest.mark.parametrize("n, m", [(0, 0), (0, 3), (2, 0)])
def test_iou_empty_in_empty_out(n, m):
    out = iou_matrix(BOXES[:n], BOXES[:m])
    assert out.shape == (n, m)


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    expected = np.array([[1, 50 / 150, 0, 25 / 100]] * 2)
    out = iou_matrix(a, b)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, atol=1e-12)
    np.testing.assert_allclose(iou_matrix(b, a), expected.T, atol=1e-12)


@pytest.mark.parametrize("n, m", [(0, 0), (0, 3), (2, 0)])
def test_ioa_empty_in_empty_out(n, m):
    assert ioa_matrix(BOXES[:n], BOXES[:m]).shape == (n, m)


def test_ioa_is_intersection_over_the_first_box():
    region = np.array([[0, 0, 100, 100]])
    a = np.array([[10, 10, 20, 20], [90, 90, 110, 110], [200, 200, 210, 210], [5, 5, 5, 9]])
    np.testing.assert_allclose(ioa_matrix(a, region), [[1.0], [0.25], [0.0], [0.0]])   # zero-area box: 0, no NaN
    np.testing.assert_allclose(ioa_matrix(region, a[:1]), [[0.01]])


@pytest.mark.parametrize("iou", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_cross_class_dedup_equals_torchvision_nms_with_its_shortcut(iou):
    """``dedup_across_classes`` skips NMS when no two boxes come near ``iou``; the keep-mask must
    still be NMS's on every layout: far apart, touching, identical, nested, IoU right at the
    threshold, zero-area boxes, ties in score."""
    import torch
    from torchvision.ops import nms

    from detst.pseudo import dedup_across_classes
    from detst.structures import Detections

    rng = np.random.default_rng(int(iou * 10))
    layouts = [
        [[0, 0, 10, 10], [20, 20, 30, 30]],                     # apart
        [[0, 0, 10, 10], [10, 0, 20, 10]],                      # touching
        [[0, 0, 10, 10], [0, 0, 10, 10]],                       # identical
        [[0, 0, 10, 10], [2, 2, 8, 8]],                         # nested, IoU 0.36
        [[0, 0, 10, 10], [0, 0, 10, 10 * iou if iou else 1]],   # IoU exactly the threshold
        [[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]],           # zero area
    ]
    for _ in range(200):
        xy = rng.uniform(0, 60, (rng.integers(2, 12), 2)).astype(np.float32)
        layouts.append(np.concatenate([xy, xy + rng.uniform(0, 30, xy.shape)], 1).tolist())
    for k, boxes in enumerate(layouts):
        xyxy = np.array(boxes, np.float32)
        score = (np.full(len(xyxy), 0.5) if k % 7 == 0 else rng.uniform(0, 1, len(xyxy))).astype(np.float32)
        want = np.zeros(len(xyxy), bool)
        want[nms(torch.from_numpy(xyxy), torch.from_numpy(score), iou).numpy()] = True
        got = dedup_across_classes(Detections(xyxy, score, np.zeros(len(xyxy), np.int64)), iou)
        np.testing.assert_array_equal(got, want, err_msg=f"{boxes} at IoU {iou}")
