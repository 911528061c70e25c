"""detst.data: the unlabeled pool given as a folder (ids, drops, no hang)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detst.data import load_pool
from detst.errors import DatasetError


def _jpg(path: Path, w: int = 40, h: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(w * h).integers(0, 255, (h, w, 3), np.uint8))
    return path


def test_folder_pool_ids_follow_sorted_paths_and_same_names_in_two_folders_are_two_images(tmp_path: Path) -> None:
    _jpg(tmp_path / "cam2" / "0001.jpg")
    _jpg(tmp_path / "cam1" / "0001.jpg", 64, 48)
    _jpg(tmp_path / "cam1" / "0002.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images, dropped = load_pool(None, tmp_path)
    assert [(im.id, im.path.relative_to(tmp_path).as_posix()) for im in images] == [
        (1, "cam1/0001.jpg"), (2, "cam1/0002.jpg"), (3, "cam2/0001.jpg")]
    assert (images[0].width, images[0].height) == (64, 48)
    assert not dropped


def test_folder_pool_with_an_unreadable_image_counts_and_names_it_and_does_not_hang(tmp_path: Path) -> None:
    """Trap: the list of dropped files was the list being iterated, so each drop appended a path to
    walk next and the load never ended (a folder pool with one corrupt file hung the round)."""
    _jpg(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"garbage, not a jpeg")
    good = _jpg(tmp_path / "c.jpg", 200, 150).read_bytes()     # the header is a small part of it
    (tmp_path / "d.jpg").write_bytes(good[: len(good) // 2])            # cut short
    files: list[str] = []
    images, dropped = load_pool(None, tmp_path, files)
    assert [im.path.name for im in images] == ["a.jpg", "c.jpg"]
    assert [im.id for im in images] == [1, 3]                            # ids stay those of the sorted paths
    assert dropped == {"image_unreadable": 1, "image_truncated": 1}
    assert files == [f"image_unreadable: {tmp_path / 'b.jpg'}", f"image_truncated: {tmp_path / 'd.jpg'}"]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_folder_pool_missing_or_without_images_is_refused_by_name(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "pool"
    if make == "empty":
        folder.mkdir()
        images, _ = load_pool(None, folder)
        assert images == []                                              # load_data turns this into a DatasetError
        return
    with pytest.raises(DatasetError, match=r"pool.*data\.unlabeled\.images"):
        load_pool(None, folder)
