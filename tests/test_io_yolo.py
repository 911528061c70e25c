"""Table tests of detst.io.yolo: normalized cxcywh only at this edge, never a value above 1."""

from __future__ import annotations

import numpy as np
import pytest

from detst.errors import DatasetError
from detst.io.yolo import format_labels, read_labels, write_labels
from detst.structures import Detections

W, H = 200, 100


def _values(text: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in text.splitlines()]).reshape(-1, 5)


def test_empty_detections_write_an_empty_label_file(tmp_path):
    text, dropped = format_labels(Detections.empty(), W, H)
    assert (text, dropped) == ("", 0)
    p = tmp_path / "labels" / "a.txt"
    assert write_labels(p, Detections.empty(), W, H) == 0
    assert p.is_file() and p.read_text() == ""
    d, clipped = read_labels(p, W, H)
    assert len(d) == 0 and clipped == 0


def test_image_without_label_file_is_background(tmp_path):
    d, clipped = read_labels(tmp_path / "nope.txt", W, H)
    assert len(d) == 0 and d.xyxy.shape == (0, 4) and clipped == 0


@pytest.mark.parametrize("xyxy", [
    [0, 0, 200.4, 100],             # slightly beyond the right edge
    [-0.4, -0.2, 200.0001, 100.3],
    [199.5, 99.5, 200.7, 100.9],    # corner box sticking out
    [0, 0, 200, 100],
])
def test_values_slightly_above_1_are_clipped_to_exactly_1_and_never_above(xyxy):
    text, dropped = format_labels(Detections([xyxy], [1], [0]), W, H, min_px=0.1)
    assert dropped == 0
    v = _values(text)[:, 1:]
    assert (v <= 1).all() and (v >= 0).all()
    assert ((v[:, :2] + v[:, 2:] / 2) <= 1 + 1e-6).all()       # right/bottom edges inside the image
    assert ((v[:, :2] - v[:, 2:] / 2) >= -1e-6).all()


def test_box_wider_than_the_image_is_written_with_width_exactly_1():
    text, _ = format_labels(Detections([[-0.5, 10, 200.5, 20]], [1], [0]), W, H)
    assert text == "0 0.500000 0.150000 1.000000 0.100000\n"


@pytest.mark.parametrize("xyxy, expect", [
    ([-0.3, -0.3, 20, 10], [10 / W, 5 / H, 20 / W, 10 / H]),     # slightly negative corners clipped to 0
    ([180, 90, 200.3, 100.3], [190 / W, 95 / H, 20 / W, 10 / H]),
])
def test_slightly_negative_or_outside_corners_are_clipped(xyxy, expect):
    text, _ = format_labels(Detections([xyxy], [1], [0]), W, H)
    np.testing.assert_allclose(_values(text)[0, 1:], expect, atol=1e-6)


def test_full_width_box_maps_exactly_to_0_and_w(tmp_path):
    p = tmp_path / "full.txt"
    write_labels(p, Detections([[0, 0, W, H]], [1], [2]), W, H)
    assert p.read_text() == "2 0.500000 0.500000 1.000000 1.000000\n"
    d, clipped = read_labels(p, W, H)
    assert clipped == 0
    np.testing.assert_array_equal(d.xyxy, np.array([[0, 0, W, H]], np.float32))
    assert d.class_id.tolist() == [2]


@pytest.mark.parametrize("boxes, n_kept, n_dropped", [
    ([], 0, 0),
    ([[10, 10, 10.5, 30]], 0, 1),                    # half a pixel wide
    ([[10, 10, 30, 10.9]], 0, 1),
    ([[10, 10, 11, 11]], 1, 0),                      # exactly 1 px: kept
    ([[10, 10, 30, 30], [5, 5, 5.2, 5.2], [-3, 5, 0.5, 20]], 1, 2),   # the last is 0.5 px wide once clipped
])
def test_sub_pixel_boxes_are_dropped_and_counted(tmp_path, boxes, n_kept, n_dropped):
    d = Detections(np.array(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes)), np.zeros(len(boxes)))
    p = tmp_path / "s.txt"
    assert write_labels(p, d, W, H) == n_dropped
    back, _ = read_labels(p, W, H)
    assert len(back) == n_kept


def test_write_read_round_trip_keeps_classes_and_pixels(tmp_path):
    d = Detections([[10, 20, 50, 60], [100.5, 0, 199, 99.25], [0, 0, 3, 3]], [0.9, 0.8, 0.7], [0, 3, 1])
    p = tmp_path / "r.txt"
    assert write_labels(p, d, W, H) == 0
    back, clipped = read_labels(p, W, H)
    assert clipped == 0
    np.testing.assert_allclose(back.xyxy, d.xyxy, atol=1e-3)
    assert back.class_id.tolist() == [0, 3, 1]
    assert back.score.tolist() == [1, 1, 1]


def test_read_clips_values_within_tolerance_and_counts_them(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("0 0.5 0.5 1.004 1.0\n1 0.25 0.25 0.1 0.1\n")
    d, clipped = read_labels(p, W, H)
    assert clipped == 1
    np.testing.assert_allclose(d.xyxy[0], [0, 0, W, H], atol=1e-4)


@pytest.mark.parametrize("lines, bad_line", [
    (["0 0.5 0.5 0.2 0.2", "1 1.5 0.5 0.2 0.2"], 2),           # centre far outside
    (["0 0.5 0.5 3.0 0.2"], 1),
    (["0 -0.2 0.5 0.1 0.1"], 1),
    (["0 0.5 0.5 0.2 0.2", "", "  ", "1 0.5 1.6 0.2 0.2"], 4),   # blank lines still count as lines
])
def test_read_of_a_value_far_outside_names_path_and_line(tmp_path, lines, bad_line):
    p = tmp_path / "far.txt"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        read_labels(p, W, H)
    assert f"{p}:{bad_line}:" in str(e.value)


@pytest.mark.parametrize("line, bad_line", [("0 0.5 0.5 0.2", 1), ("0 0.5 0.5 0.2 0.2 0.9", 1), ("car 0.5 0.5 0.2 0.2", 1)])
def test_read_malformed_line_names_path_and_line(tmp_path, line, bad_line):
    p = tmp_path / "m.txt"
    p.write_text(line + "\n")
    with pytest.raises(DatasetError, match=rf"{p.name}:{bad_line}:"):
        read_labels(p, W, H)


@pytest.mark.parametrize("line", ["0 0.5 0.5 -0.1 0.2", "0 0.5 0.5 0.2 -0.001"])
def test_read_negative_width_or_height_is_an_error(tmp_path, line):
    p = tmp_path / "neg.txt"
    p.write_text("0 0.5 0.5 0.2 0.2\n" + line + "\n")
    with pytest.raises(DatasetError, match="negative") as e:
        read_labels(p, W, H)
    assert f"{p}:2:" in str(e.value)
