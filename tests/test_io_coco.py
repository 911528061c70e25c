"""Table tests of detst.io.coco: the COCO edge (xywh in, xyxy inside, counted fixes, named errors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from detst.errors import DatasetError
from detst.io.coco import annotation_entries, detections_to_results, gt_dataset, image_entry, load_coco
from detst.io.files import write_json
from detst.structures import ClassMap, Detections, ImageRecord

W, H = 100, 80


def _img(path: Path, w: int = W, h: int = H) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))
    return path


def _coco(tmp_path: Path, anns: list[dict[str, Any]], images: list[dict[str, Any]] | None = None,
          cats: list[dict[str, Any]] | None = None, **top: Any) -> Path:
    """Write a COCO file (no 'info', no 'licenses') and a 100x80 image per entry."""
    if images is None:
        images = [{"id": 1, "file_name": "a.png", "width": W, "height": H}]
    for im in images:
        if not (tmp_path / im["file_name"]).exists():
            _img(tmp_path / im["file_name"], im.get("width", W), im.get("height", H))
    data = {"images": images, "annotations": anns,
            "categories": cats or [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}], **top}
    path = tmp_path / "ann.json"
    write_json(path, data)
    return path


def _ann(bbox, cat=1, image_id=1, **kw) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, **kw}


# ---------------------------------------------------------------- loading

def test_no_info_key_and_no_optional_annotation_keys_load(tmp_path):
    path = _coco(tmp_path, [_ann([10, 10, 20, 30])])          # no id, iscrowd, area, segmentation
    assert "info" not in json.loads(path.read_text())
    cs = load_coco(path, tmp_path)
    d = cs.boxes[1]
    np.testing.assert_allclose(d.xyxy, [[10, 10, 30, 40]])
    assert d.extras["iscrowd"].tolist() == [0]
    assert d.score.tolist() == [1.0]
    assert not cs.dropped


def test_empty_annotations_give_empty_detections_per_image(tmp_path):
    path = _coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}])
    cs = load_coco(path, tmp_path)
    assert [im.id for im in cs.images] == [1, 2]
    assert all(len(cs.boxes[i]) == 0 and cs.boxes[i].xyxy.shape == (0, 4) for i in (1, 2))
    assert not cs.dropped


def test_iscrowd_is_carried_as_an_extra(tmp_path):
    path = _coco(tmp_path, [_ann([10, 10, 20, 30], iscrowd=1), _ann([40, 10, 20, 30])])
    assert load_coco(path, tmp_path).boxes[1].extras["iscrowd"].tolist() == [1, 0]


def test_category_ids_starting_at_1_with_gaps_are_kept(tmp_path):
    cats = [{"id": 7, "name": "light"}, {"id": 1, "name": "car"}, {"id": 3, "name": "person"}]
    path = _coco(tmp_path, [_ann([0, 0, 10, 10], cat=7), _ann([0, 0, 10, 10], cat=1), _ann([0, 0, 10, 10], cat=3)],
                 cats=cats)
    cs = load_coco(path, tmp_path)
    assert cs.classes.category_ids == (1, 3, 7)
    assert cs.classes.names == ("car", "person", "light")
    assert [cs.classes.to_index(c) for c in (1, 3, 7)] == [0, 1, 2]
    assert [cs.classes.to_category(i) for i in (0, 1, 2)] == [1, 3, 7]
    assert cs.boxes[1].class_id.tolist() == [2, 0, 1]
    # and back out: the ids are written as the user wrote them
    anns = annotation_entries(1, cs.boxes[1], cs.classes, first_id=1)
    assert [a["category_id"] for a in anns] == [7, 1, 3]
    assert {c["id"] for c in gt_dataset(cs.images, cs.boxes, cs.classes)["categories"]} == {1, 3, 7}


def test_categories_must_match_the_labeled_set(tmp_path):
    path = _coco(tmp_path, [])
    with pytest.raises(DatasetError, match="differ"):
        load_coco(path, tmp_path, classes=ClassMap((1, 3), ("car", "person")))


def test_unknown_category_is_an_error(tmp_path):
    path = _coco(tmp_path, [_ann([0, 0, 10, 10], cat=5)])
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.category_id 5"):
        load_coco(path, tmp_path)


@pytest.mark.parametrize("bbox, why", [
    ([60, 50, -10, 20], "negative width/height"),           # xyxy with x2 < x1 read as xywh
    ([60, 50, 5, -1], "negative width/height"),
    ([50, 40, 90, 70], "outside the image"),                 # xyxy [50,40,90,70] read as xywh reaches 140x110
    ([0, 0, 100, 85], "outside the image"),
])
def test_xyxy_written_where_xywh_belongs_names_file_and_image(tmp_path, bbox, why):
    path = _coco(tmp_path, [_ann([1, 1, 5, 5], image_id=42), _ann(bbox, image_id=42)],
                 images=[{"id": 42, "file_name": "cam/a.png"}])
    with pytest.raises(DatasetError, match=why) as e:
        load_coco(path, tmp_path)
    assert str(path) in str(e.value) and "image 42" in str(e.value) and "a.png" in str(e.value)


@pytest.mark.parametrize("bbox, key", [
    ([10, 10, 0, 20], "box_degenerate"),
    ([10, 10, 20, 0], "box_degenerate"),
    ([100.2, 10, 0.5, 10], "box_degenerate"),               # inside the tolerance, zero width once clipped
])
def test_zero_width_or_height_box_is_dropped_and_counted(tmp_path, bbox, key):
    path = _coco(tmp_path, [_ann([1, 1, 5, 5]), _ann(bbox), _ann([20, 20, 5, 5])])
    cs = load_coco(path, tmp_path)
    assert len(cs.boxes[1]) == 2
    np.testing.assert_allclose(cs.boxes[1].xyxy, [[1, 1, 6, 6], [20, 20, 25, 25]])
    assert cs.dropped[key] == 1


@pytest.mark.parametrize("bbox, xyxy", [
    ([-0.3, 10, 20, 20], [0, 10, 19.7, 30]),
    ([10, -0.3, 20, 20], [10, 0, 30, 19.7]),
    ([80, 10, 20.3, 20], [80, 10, 100, 30]),
    ([10, 60, 20, 20.3], [10, 60, 30, 80]),
])
def test_box_a_third_pixel_outside_is_clipped_and_counted(tmp_path, bbox, xyxy):
    path = _coco(tmp_path, [_ann(bbox), _ann([1, 1, 5, 5])])
    cs = load_coco(path, tmp_path)
    np.testing.assert_allclose(cs.boxes[1].xyxy, [xyxy, [1, 1, 6, 6]], atol=1e-5)
    assert cs.dropped == {"box_clipped": 1}


def test_annotation_whose_image_id_is_not_in_images_is_an_error(tmp_path):
    path = _coco(tmp_path, [_ann([1, 1, 5, 5]), _ann([1, 1, 5, 5], image_id=9)])
    with pytest.raises(DatasetError, match=r"annotations\[1\]\.image_id 9") as e:
        load_coco(path, tmp_path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("bbox", [[1, 1, 5], "1,1,5,5", [1, 1, "5", 5], None])
def test_malformed_bbox_is_an_error(tmp_path, bbox):
    path = _coco(tmp_path, [_ann(bbox)])
    with pytest.raises(DatasetError, match=r"annotations\[0\]\.bbox"):
        load_coco(path, tmp_path)


def test_image_size_in_json_disagreeing_with_pixels_is_an_error(tmp_path):
    _img(tmp_path / "a.png", 100, 80)
    path = _coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "width": 80, "height": 100}])
    with pytest.raises(DatasetError, match="80x100") as e:
        load_coco(path, tmp_path)
    assert str(path) in str(e.value) and "images[0]" in str(e.value) and "a.png" in str(e.value)


def test_image_size_missing_from_json_is_read_from_the_file(tmp_path):
    _img(tmp_path / "a.png", 64, 48)
    path = _coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png"}])
    (im,) = load_coco(path, tmp_path).images
    assert (im.width, im.height) == (64, 48)


def test_missing_or_corrupt_image_is_skipped_and_counted(tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "gone.png"},
              {"id": 3, "file_name": "corrupt.jpg"}]
    path = _coco(tmp_path, [_ann([1, 1, 5, 5], image_id=1), _ann([1, 1, 5, 5], image_id=2),
                            _ann([1, 1, 5, 5], image_id=3), _ann([2, 2, 5, 5], image_id=3)], images=images)
    (tmp_path / "gone.png").unlink()
    cs = load_coco(path, tmp_path)
    assert [im.id for im in cs.images] == [1]
    assert set(cs.boxes) == {1}
    assert cs.dropped == {"image_missing": 1, "image_unreadable": 1, "box_of_dropped_image": 3}


def test_two_files_with_the_same_name_in_different_folders_are_two_images(tmp_path):
    _img(tmp_path / "cam1" / "0001.png", 100, 80)
    _img(tmp_path / "cam2" / "0001.png", 60, 40)
    images = [{"id": 5, "file_name": "cam1/0001.png", "width": 100, "height": 80},
              {"id": 6, "file_name": "cam2/0001.png", "width": 60, "height": 40}]
    path = _coco(tmp_path, [_ann([1, 1, 5, 5], image_id=5), _ann([2, 2, 5, 5], image_id=6),
                            _ann([3, 3, 5, 5], image_id=6)], images=images)
    cs = load_coco(path, tmp_path)
    assert [(im.id, im.width, im.height) for im in cs.images] == [(5, 100, 80), (6, 60, 40)]
    assert cs.images[0].path != cs.images[1].path
    assert (len(cs.boxes[5]), len(cs.boxes[6])) == (1, 2)


@pytest.mark.parametrize("ids, match", [([1, 1], "used twice"), (["1", 2], "must be an integer"), ([True, 2], "integer")])
def test_bad_image_ids_are_errors(tmp_path, ids, match):
    images = [{"id": i, "file_name": f"{k}.png"} for k, i in enumerate(ids)]
    path = _coco(tmp_path, [], images=images)
    with pytest.raises(DatasetError, match=match):
        load_coco(path, tmp_path)


def test_image_attributes_become_tags(tmp_path):
    path = _coco(tmp_path, [], images=[{"id": 1, "file_name": "a.png", "attributes": {"timeofday": "night"}}])
    assert load_coco(path, tmp_path).images[0].tags == {"timeofday": "night"}


@pytest.mark.parametrize("content, match", [(None, "not found"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object"),
                                            ('{"images": [], "annotations": [], "categories": []}', "categories")])
def test_unreadable_annotation_file_is_a_dataset_error(tmp_path, content, match):
    path = tmp_path / "ann.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_coco(path, tmp_path)


def test_check_files_false_needs_sizes_in_json_and_reads_no_file(tmp_path):
    data = {"images": [{"id": 1, "file_name": "nowhere.png", "width": 50, "height": 40}], "annotations": [],
            "categories": [{"id": 1, "name": "car"}]}
    write_json(tmp_path / "a.json", data)
    cs = load_coco(tmp_path / "a.json", tmp_path, check_files=False)
    assert (cs.images[0].width, cs.images[0].height) == (50, 40)
    del data["images"][0]["width"]
    write_json(tmp_path / "b.json", data)
    with pytest.raises(DatasetError, match="width"):
        load_coco(tmp_path / "b.json", tmp_path, check_files=False)


# ---------------------------------------------------------------- writing

CLASSES = ClassMap((1, 3), ("car", "person"))


def test_annotation_id_zero_is_never_written():
    d = Detections([[0, 0, 10, 10]], [0.9], [0])
    with pytest.raises(ValueError, match="start at 1"):
        annotation_entries(1, d, CLASSES, first_id=0)
    with pytest.raises(ValueError):
        annotation_entries(1, d, CLASSES, first_id=-3)
    assert annotation_entries(1, d, CLASSES, first_id=1)[0]["id"] == 1
    images = [ImageRecord(i, Path(f"/x/{i}.png"), W, H) for i in (1, 2, 3)]
    boxes = {1: d, 2: Detections.empty(), 3: Detections.concat([d, d])}
    anns = gt_dataset(images, boxes, CLASSES)["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3]


def test_annotation_entries_empty_detections():
    assert annotation_entries(1, Detections.empty(), CLASSES, first_id=1) == []


def test_annotation_entries_are_complete_coco_and_xywh():
    d = Detections([[10, 20, 40, 60], [0, 0, 5, 5]], [0.9, 0.4], [1, 0],
                   {"iscrowd": np.array([0, 1]), "threshold": np.array([0.5, 0.6], np.float32)})
    anns = annotation_entries(7, d, CLASSES, first_id=11, extras=("score", "threshold", "missing"))
    a, b = anns
    assert a["id"] == 11 and b["id"] == 12 and a["image_id"] == 7
    assert a["bbox"] == [10, 20, 30, 40] and a["area"] == 1200 and a["category_id"] == 3
    assert (a["iscrowd"], b["iscrowd"]) == (0, 1)
    assert a["segmentation"] == []
    assert a["score"] == pytest.approx(0.9) and b["threshold"] == pytest.approx(0.6)
    assert a["missing"] is None
    assert json.loads(json.dumps(anns)) == anns                     # all native types


def test_write_json_turns_numpy_numbers_into_native_types(tmp_path):
    obj = {"id": np.int64(3), "ids": np.arange(3, dtype=np.int32), "score": np.float32(0.25),
           "flag": np.bool_(True), "bbox": [np.float64(1.5), np.int16(2)], "path": tmp_path / "x"}
    write_json(tmp_path / "o.json", obj)
    back = json.loads((tmp_path / "o.json").read_text())
    assert back == {"id": 3, "ids": [0, 1, 2], "score": 0.25, "flag": True, "bbox": [1.5, 2], "path": str(tmp_path / "x")}
    assert type(back["id"]) is int and type(back["score"]) is float
    assert not list(tmp_path.glob(".o.json.*"))                      # no temporary left behind


def test_write_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "n.json", {"x": float("nan")})


def test_gt_dataset_round_trips_through_a_file(tmp_path):
    _img(tmp_path / "img" / "a.png")
    _img(tmp_path / "img" / "b.png")
    images = [ImageRecord(1, (tmp_path / "img" / "a.png").resolve(), W, H, {"timeofday": "day"}),
              ImageRecord(2, (tmp_path / "img" / "b.png").resolve(), W, H)]
    boxes = {1: Detections([[10.25, 20.5, 40.75, 60.0], [0, 0, 100, 80]], [1, 1], [1, 0],
                           {"iscrowd": np.array([0, 1])}),
             2: Detections.empty()}
    data = gt_dataset(images, boxes, CLASSES)
    data["images"] = [image_entry(im, base=(tmp_path / "img").resolve()) for im in images]
    assert data["images"][0]["file_name"] == "a.png"
    write_json(tmp_path / "gt.json", data)
    cs = load_coco(tmp_path / "gt.json", tmp_path / "img")
    assert [im.id for im in cs.images] == [1, 2] and cs.images[0].tags == {"timeofday": "day"}
    np.testing.assert_allclose(cs.boxes[1].xyxy, boxes[1].xyxy, atol=0.01)
    assert cs.boxes[1].class_id.tolist() == [1, 0]
    assert cs.boxes[1].extras["iscrowd"].tolist() == [0, 1]
    assert len(cs.boxes[2]) == 0
    assert not cs.dropped


def test_image_entry_slices_and_absolute_name_outside_base(tmp_path):
    im = ImageRecord(3, Path("/elsewhere/x.png"), 10, 20)
    e = image_entry(im, slices=["night"], base=tmp_path)
    assert e == {"id": 3, "file_name": "/elsewhere/x.png", "width": 10, "height": 20, "slices": ["night"]}


def test_detections_to_results():
    assert detections_to_results({}, CLASSES) == []
    assert detections_to_results({1: Detections.empty()}, CLASSES) == []
    res = detections_to_results({4: Detections([[10, 20, 40, 60]], [np.float32(0.5)], [1])}, CLASSES)
    assert res == [{"image_id": 4, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.5}]
    assert json.loads(json.dumps(res)) == res


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png"])
def test_truncated_image_in_a_labeled_set_is_skipped_and_counted_not_restored(tmp_path, name):
    """Reading the header does not notice a file cut short; ultralytics would "restore" such a JPEG
    (re-saved with the missing part grey) and train on it. It is dropped and counted at load."""
    rng = np.random.default_rng(0)
    full = tmp_path / f"full{Path(name).suffix}"
    cv2.imwrite(str(full), cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (0, 0), 2))
    (tmp_path / name).write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    before = (tmp_path / name).read_bytes()
    images = [{"id": 1, "file_name": full.name}, {"id": 2, "file_name": name}]
    path = _coco(tmp_path, [_ann([1, 1, 5, 5], image_id=1), _ann([1, 1, 5, 5], image_id=2)], images=images)
    cs = load_coco(path, tmp_path)
    assert [im.id for im in cs.images] == [1]
    assert cs.dropped == {"image_truncated": 1, "box_of_dropped_image": 1}
    assert cs.dropped_files == [f"image_truncated: {(tmp_path / name).resolve()}"]
    assert (tmp_path / name).read_bytes() == before


def test_jpeg_with_bytes_after_its_end_marker_is_kept(tmp_path):
    p = tmp_path / "tail.jpg"
    cv2.imwrite(str(p), np.full((40, 60, 3), 90, np.uint8))
    p.write_bytes(p.read_bytes() + b"\x00" * 16)              # padding some cameras append
    cs = load_coco(_coco(tmp_path, [], images=[{"id": 1, "file_name": "tail.jpg"}]), tmp_path)
    assert [im.id for im in cs.images] == [1] and not cs.dropped


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    """A duplicate image id, an unknown category and an xyxy box: one error naming the file and all
    three, so the file is fixed in one go rather than one problem per run."""
    _img(tmp_path / "b.png")
    images = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}, {"id": 2, "file_name": "b.png"}]
    anns = [_ann([1, 1, 5, 5], cat=9, image_id=1), _ann([60, 50, 90, 70], image_id=2), _ann([1, 1, 5, 5], image_id=2)]
    path = _coco(tmp_path, anns, images=images)
    with pytest.raises(DatasetError) as e:
        load_coco(path, tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: 3 problems:")
    assert "images[1].id 1 is used twice" in msg and "category_id 9 is not in 'categories'" in msg
    assert "is it xyxy where COCO xywh belongs" in msg


@pytest.mark.parametrize("chunk", [1, 2, 4096])
@pytest.mark.parametrize("n_images", [0, 1, 5])
def test_streamed_coco_file_equals_the_dict_written_at_once_and_its_key(tmp_path, chunk, n_images):
    """The pseudo-label file is written entry by entry (memory: one chunk); its bytes and content
    key are those of the whole dict, however the entries fall into chunks (none, one, several)."""
    from detst.io.coco import CocoWriter
    from detst.io.files import write_json
    from detst.runfolder import key_hash

    info = {"round": 1, "unreadable_images": [7]}
    cats = [{"id": 1, "name": "car", "supercategory": ""}]
    images, anns = [], []
    w = CocoWriter(tmp_path / "stream.json", chunk=chunk)
    for i in range(1, n_images + 1):
        im = {"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48, "slices": ["night"]}
        a = [{"id": len(anns) + k + 1, "image_id": i, "category_id": 1, "bbox": [1.5, 2.0, 3.25, 4.0], "area": 13.0,
              "iscrowd": k % 2, "segmentation": [], "score": 0.12345} for k in range(i % 3)]
        images.append(im)
        anns += a
        w.image(im)
        w.annotations(a)
    key = w.close(info, cats)
    write_json(tmp_path / "dict.json", {"info": info, "licenses": [], "images": images, "annotations": anns,
                                        "categories": cats}, indent=None)
    assert (tmp_path / "stream.json").read_bytes() == (tmp_path / "dict.json").read_bytes()
    assert key == key_hash({"images": images, "annotations": anns})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict.json", "stream.json"]     # no spool left behind
