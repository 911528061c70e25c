"""Table tests of detst.io.images: every decodable file becomes (H, W, 3) uint8 BGR with a note,
EXIF orientation is applied consistently, bad files are named errors, files are only read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from detst.errors import DatasetError
from detst.io.images import image_size, is_plain_bgr8, iter_image_batches, read_image, to_bgr8

H, W = 40, 60


def _pattern(h: int = H, w: int = W) -> np.ndarray:
    """BGR image with a bright block in the top-left corner, so orientation is visible."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[: h // 4, : w // 4] = (250, 200, 150)
    img[h // 2:, :, 1] = 120
    return img


def _write(path: Path, arr: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), arr)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name, arr, note", [
    ("rgb.png", _pattern(), None),
    ("rgb.jpg", _pattern(), None),
    ("gray.png", _pattern()[:, :, 0], "grayscale"),
    ("rgba.png", np.dstack([_pattern(), np.full((H, W), 128, np.uint8)]), "alpha dropped"),
    ("gray16.png", _pattern()[:, :, 0].astype(np.uint16) * 257, "16-bit"),
    ("rgb16.png", _pattern().astype(np.uint16) * 257, "16-bit"),
    ("rgba16.png", np.dstack([_pattern(), np.full((H, W), 9, np.uint8)]).astype(np.uint16) * 257, "alpha dropped"),
])
def test_any_decodable_image_becomes_hw3_uint8_with_a_note(tmp_path, name, arr, note):
    p = _write(tmp_path / name, arr)
    img, got = read_image(p)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]
    if note is None:
        assert got is None
    else:
        assert got is not None and note in got
    assert image_size(p) == (W, H)


def test_grayscale_and_16bit_keep_the_picture(tmp_path):
    gray = _pattern()[:, :, 0]
    img, _ = read_image(_write(tmp_path / "g.png", gray))
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)
    img16, note = read_image(_write(tmp_path / "g16.png", gray.astype(np.uint16) * 257))
    assert "16-bit" in note
    assert img16[0, 0, 0] > img16[-1, -1, 0]          # the bright corner stays the brightest
    assert img16.max() == 255


def test_rgba_drops_alpha_and_keeps_colour(tmp_path):
    bgr = _pattern()
    img, _ = read_image(_write(tmp_path / "a.png", np.dstack([bgr, np.zeros((H, W), np.uint8)])))
    np.testing.assert_array_equal(img, bgr)


def test_palette_png_with_transparency_notes_alpha(tmp_path):
    p = tmp_path / "p.png"
    Image.fromarray(_pattern()[:, :, ::-1]).convert("P").save(p, transparency=0)
    img, note = read_image(p)
    assert img.shape == (H, W, 3) and "alpha dropped" in note


@pytest.mark.parametrize("keep", [0.95, 0.5, 0.1])
def test_truncated_jpeg_raises_dataset_error_naming_the_file(tmp_path, keep):
    full = _write(tmp_path / "full.jpg", cv2.GaussianBlur(_pattern(200, 300), (0, 0), 3))
    data = full.read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DatasetError, match="cut.jpg"):
        read_image(p)


@pytest.mark.parametrize("content", [b"", b"not an image" * 20, b"\x89PNG\r\n\x1a\n" + b"\x00" * 10])
def test_empty_or_garbage_file_raises_dataset_error(tmp_path, content):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(DatasetError, match="bad.png"):
        read_image(p)
    with pytest.raises(DatasetError, match="bad.png"):
        image_size(p)
    assert not is_plain_bgr8(p)


def test_exif_orientation_6_swaps_size_and_rotates_pixels(tmp_path):
    stored = _pattern()                                # stored as 60 wide x 40 high
    p = tmp_path / "rot.jpg"
    pil = Image.fromarray(stored[:, :, ::-1])
    exif = pil.getexif()
    exif[274] = 6                                      # "rotate 90 CW to display"
    pil.save(p, exif=exif.tobytes(), quality=95)
    assert image_size(p) == (H, W)                     # width/height swapped
    img, _ = read_image(p)
    assert img.shape == (W, H, 3)
    raw = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape == (H, W, 3)
    np.testing.assert_array_equal(img, cv2.rotate(raw, cv2.ROTATE_90_CLOCKWISE))
    with Image.open(p) as im:                           # PIL agrees on the displayed picture
        ref = np.asarray(ImageOps.exif_transpose(im))[:, :, ::-1]
    assert np.abs(img.astype(int) - ref.astype(int)).mean() < 2
    assert img[2, -2].mean() > 150 and img[2, 2].mean() < 150   # the bright corner is now top-right


def test_reading_never_modifies_the_file(tmp_path):
    files = [_write(tmp_path / "a.jpg", _pattern()), _write(tmp_path / "b.png", np.dstack([_pattern(), _pattern()[:, :, 0]])),
             _write(tmp_path / "c.png", _pattern().astype(np.uint16) * 257)]
    pil = Image.fromarray(_pattern()[:, :, ::-1])
    exif = pil.getexif()
    exif[274] = 6
    pil.save(tmp_path / "d.jpg", exif=exif.tobytes())
    files.append(tmp_path / "d.jpg")
    before = {p: (_sha(p), p.stat().st_mtime_ns) for p in files}
    listing = sorted(tmp_path.iterdir())
    for p in files:
        read_image(p)
        image_size(p)
        is_plain_bgr8(p)
    assert {p: (_sha(p), p.stat().st_mtime_ns) for p in files} == before
    assert sorted(tmp_path.iterdir()) == listing


@pytest.mark.parametrize("name, arr, plain", [
    ("a.jpg", _pattern(), True),
    ("a.png", _pattern(), True),
    ("g.png", _pattern()[:, :, 0], False),
    ("r.png", np.dstack([_pattern(), _pattern()[:, :, 0]]), False),
    ("s.png", _pattern().astype(np.uint16) * 257, False),        # PIL calls a 16-bit RGB PNG "RGB"
    ("t.png", _pattern()[:, :, 0].astype(np.uint16) * 257, False),
])
def test_is_plain_bgr8(tmp_path, name, arr, plain):
    assert is_plain_bgr8(_write(tmp_path / name, arr)) is plain


@pytest.mark.parametrize("arr, note", [
    (np.zeros((0, 0, 3), np.uint8)[:0], None),
    (np.full((2, 3), 7, np.uint8), "grayscale to BGR"),
    (np.full((2, 3, 1), 7, np.uint8), "grayscale to BGR"),
    (np.full((2, 3, 3), 300.0, np.float32), "float32 cast to uint8"),
])
def test_to_bgr8_table(arr, note):
    out, got = to_bgr8(arr)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert got == note


def test_to_bgr8_constant_16bit_image_does_not_divide_by_zero():
    out, note = to_bgr8(np.full((2, 2), 1000, np.uint16))
    assert out.shape == (2, 2, 3) and "16-bit" in note


@dataclass
class _Rec:
    path: Path


@pytest.mark.parametrize("n_good, batch", [(0, 2), (1, 4), (5, 2)])
def test_iter_image_batches_keeps_order_and_reports_bad_files(tmp_path, n_good, batch):
    recs = [_Rec(_write(tmp_path / f"{i}.png", _pattern())) for i in range(n_good)]
    (tmp_path / "bad.jpg").write_bytes(b"xx")
    bad = _Rec(tmp_path / "bad.jpg")
    recs.insert(len(recs) // 2, bad)
    seen, errors = [], []
    for chunk, imgs, errs in iter_image_batches(recs, batch, workers=2, prefetch=1):
        assert len(chunk) == len(imgs) == len(errs) <= batch
        for r, im, e in zip(chunk, imgs, errs):
            seen.append(r)
            if e is None:
                assert im.shape == (H, W, 3)
            else:
                assert im is None and "bad.jpg" in e
                errors.append(r)
    assert seen == recs and errors == [bad]


def test_iter_image_batches_empty():
    assert list(iter_image_batches([], 4)) == []


def test_ultralytics_pil_open_patch_does_not_turn_a_corrupt_image_into_an_import_error(tmp_path):
    """Importing ultralytics patches PIL.Image.open to try pi-heif on unidentified files; without it
    that raises ModuleNotFoundError. A corrupt image must still be a DatasetError (skipped, counted)."""
    import ultralytics.utils.patches  # noqa: F401  (applies the patch, as any training run does)

    from detst.errors import DatasetError
    from detst.io.images import image_size, is_plain_bgr8

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(DatasetError, match="bad.jpg"):
        image_size(bad)
    assert is_plain_bgr8(bad) is False
