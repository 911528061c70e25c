"""The built-in day/night street-scene data set: a deterministic synthetic generator.

This module owns the demo and test data of detst. It draws street-like scenes (sky,
buildings, a road with lane marks, lamp posts, trees) with three object classes that
each have a distinctive, high-contrast look in daylight, so a tiny detector learns
them from scratch on a CPU within minutes:

* ``car`` (about 60 % of boxes): a saturated rounded body with a cabin, dark windows,
  black wheels, a head light and a tail light;
* ``person`` (about 25 %): a thin vertical figure with a head circle, shirt, arms, legs;
* ``traffic_light`` (about 15 %): a small dark vertical housing with three discs, one of
  them lit red, yellow or green, on a pole (the box is the housing).

Night images are the same kind of scenes, darkened x0.1-0.2 under a colour cast, with
light pools and glows of street lamps, lit windows, car lights, glare, low contrast,
slight blur and sensor noise, so that a teacher trained mostly on day images shows a
genuine night gap, worst on small objects.

:func:`generate` writes three COCO splits (``labeled``, ``val``, the unlabeled
``pool`` without annotations) plus ``pool_oracle.json`` (the pool's true boxes, for
benchmarks and tests only) and a ``manifest.json``. Every image is tagged with
``attributes.timeofday``. Generation is a pure function of its arguments: every image
is drawn by its own ``numpy.random.Generator`` seeded from (seed, split, index), and
a second call with the same arguments finds a matching manifest and writes nothing.

Run ``python -m datasets.daynight --out DIR`` to generate from the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

__all__ = ["CATEGORIES", "GENERATOR_VERSION", "SPLITS", "generate", "main", "render_scene"]

GENERATOR_VERSION = 1
SPLITS = ("labeled", "val", "pool")
CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "car", "supercategory": "vehicle"},
    {"id": 2, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "traffic_light", "supercategory": "outdoor"},
)
CAR, PERSON, TRAFFIC_LIGHT = 1, 2, 3
CLASS_PROBS = (0.58, 0.26, 0.16)  # drawn; placement failures shift the final shares slightly
SMALL_AREA = 32 * 32  # COCO's small bucket, the same definition detst uses everywhere
MEDIUM_AREA = 96 * 96
JPEG_QUALITY = 92

_SPLIT_CODES = {"labeled": 1, "val": 2, "pool": 3}
_NIGHT_STREAM = 1_000_003  # stream id for the per-split choice of night images
_MIN_VISIBLE = 0.6  # an object clipped by the image border must keep this share of its box

# Saturated body colours (BGR) for cars; a few neutral ones for realism.
_CAR_COLOURS = (
    (30, 30, 220),
    (220, 60, 20),
    (20, 210, 240),
    (40, 180, 40),
    (0, 130, 255),
    (200, 40, 200),
    (200, 200, 30),
    (235, 235, 235),
    (60, 60, 200),
    (180, 100, 0),
)
_SHIRT_COLOURS = (
    (40, 40, 230),
    (230, 120, 30),
    (30, 200, 250),
    (60, 200, 60),
    (200, 60, 200),
    (250, 250, 250),
    (0, 140, 255),
    (160, 40, 40),
    (120, 200, 250),
)
_SKIN_COLOURS = ((140, 180, 230), (110, 150, 200), (70, 110, 160), (50, 80, 120))
_PANTS_COLOURS = ((60, 30, 20), (40, 40, 40), (90, 70, 50), (30, 30, 70))
_TL_LAMPS = ((40, 40, 255), (30, 220, 255), (90, 255, 40))  # red, yellow, green (BGR)


# --------------------------------------------------------------------------- drawing


class _Pen:
    """Draws the same shapes on a colour canvas and on its coverage mask."""

    def __init__(self, h: int, w: int) -> None:
        self.img = np.zeros((h, w, 3), np.uint8)
        self.mask = np.zeros((h, w), np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: tuple[int, ...]) -> None:
        cv2.rectangle(self.img, (x0, y0), (x1, y1), colour, -1)
        cv2.rectangle(self.mask, (x0, y0), (x1, y1), 255, -1)

    def circle(self, cx: int, cy: int, r: int, colour: tuple[int, ...]) -> None:
        cv2.circle(self.img, (cx, cy), r, colour, -1, cv2.LINE_AA)
        cv2.circle(self.mask, (cx, cy), r, 255, -1, cv2.LINE_AA)

    def line(self, p: tuple[int, int], q: tuple[int, int], t: int, colour: tuple[int, ...]) -> None:
        cv2.line(self.img, p, q, colour, t, cv2.LINE_AA)
        cv2.line(self.mask, p, q, 255, t, cv2.LINE_AA)

    def rrect(self, x0: int, y0: int, x1: int, y1: int, r: int, colour: tuple[int, ...]) -> None:
        r = int(max(0, min(r, (x1 - x0) // 2, (y1 - y0) // 2)))
        if r == 0:
            self.rect(x0, y0, x1, y1, colour)
            return
        self.rect(x0 + r, y0, x1 - r, y1, colour)
        self.rect(x0, y0 + r, x1, y1 - r, colour)
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            cv2.circle(self.img, (cx, cy), r, colour, -1, cv2.LINE_AA)
            cv2.circle(self.mask, (cx, cy), r, 255, -1, cv2.LINE_AA)


@dataclass
class _Light:
    """An emissive spot that shines at night (glow added after darkening)."""

    x: float
    y: float
    sigma: float
    colour: tuple[float, ...]  # BGR in 0..1
    amp: float
    pool: bool = False  # a pool of light on the ground (brightens the scene) rather than a glow


@dataclass
class _Road:
    horizon: int
    size: int
    vx: float
    left_bottom: float
    right_bottom: float

    def depth(self, y: float) -> float:
        return (y - self.horizon) / (self.size - self.horizon)

    def y_at(self, s: float) -> float:
        return self.horizon + s * (self.size - self.horizon)

    def span(self, y: float) -> tuple[float, float]:
        s = self.depth(y)
        return self.vx + (self.left_bottom - self.vx) * s, self.vx + (self.right_bottom - self.vx) * s


@dataclass
class _Object:
    cls: int
    x0: int
    y0: int
    w: int
    h: int
    foot: float
    params: dict[str, Any] = field(default_factory=dict)

    def box(self, size: int) -> tuple[float, float, float, float]:
        return (
            float(max(0, self.x0)),
            float(max(0, self.y0)),
            float(min(size, self.x0 + self.w)),
            float(min(size, self.y0 + self.h)),
        )

    def visible(self, size: int) -> float:
        x0, y0, x1, y1 = self.box(size)
        return max(0.0, x1 - x0) * max(0.0, y1 - y0) / float(self.w * self.h)


def _pick(rng: np.random.Generator, options: tuple[Any, ...]) -> Any:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, colour: tuple[int, ...], amount: int) -> tuple[int, int, int]:
    c = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


def _composite(scene: np.ndarray, pen: _Pen, x0: int, y0: int) -> tuple[float, float, float, float] | None:
    """Alpha-blend a sprite into the scene; return the tight xyxy box of what is visible."""
    size_h, size_w = scene.shape[:2]
    h, w = pen.mask.shape
    sx0, sy0 = max(0, -x0), max(0, -y0)
    sx1, sy1 = min(w, size_w - x0), min(h, size_h - y0)
    if sx1 <= sx0 or sy1 <= sy0:
        return None
    m = pen.mask[sy0:sy1, sx0:sx1]
    region = scene[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1]
    a = (m.astype(np.float32) / 255.0)[..., None]
    blended = region * (1.0 - a) + pen.img[sy0:sy1, sx0:sx1] * a
    region[...] = np.round(blended).astype(np.uint8)
    rows = np.flatnonzero((m >= 128).any(axis=1))
    cols = np.flatnonzero((m >= 128).any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return None
    bx0, by0 = x0 + sx0 + cols[0], y0 + sy0 + rows[0]
    bx1, by1 = x0 + sx0 + cols[-1] + 1, y0 + sy0 + rows[-1] + 1
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return None
    return float(bx0), float(by0), float(bx1), float(by1)


# --------------------------------------------------------------------------- background


def _draw_sky(img: np.ndarray, rng: np.random.Generator, horizon: int) -> None:
    top = np.array(_jitter(rng, (225, 160, 95), 20), np.float32)
    bottom = np.array(_jitter(rng, (235, 215, 190), 15), np.float32)
    t = np.linspace(0.0, 1.0, max(horizon, 1), dtype=np.float32)[:, None]
    img[:horizon] = np.round(top * (1 - t) + bottom * t)[:, None, :].astype(np.uint8)
    for _ in range(int(rng.integers(0, 3))):  # a few soft clouds
        cx, cy = int(rng.integers(0, img.shape[1])), int(rng.integers(0, max(horizon // 2, 1)))
        ax, ay = int(rng.integers(10, 30) * img.shape[1] / 256), int(rng.integers(3, 8) * img.shape[1] / 256)
        cv2.ellipse(img, (cx, cy), (max(ax, 2), max(ay, 1)), 0, 0, 360, (245, 245, 245), -1, cv2.LINE_AA)


def _draw_buildings(img: np.ndarray, rng: np.random.Generator, horizon: int, k: float) -> list[tuple[int, int, int, int]]:
    """Muted blocks along the horizon with window grids; returns the window rectangles."""
    size = img.shape[1]
    windows: list[tuple[int, int, int, int]] = []
    x = -int(rng.integers(0, int(20 * k) + 1))
    base_line = horizon + int(2 * k)
    while x < size:
        bw = int(rng.uniform(0.08, 0.22) * size)
        bh = int(rng.uniform(0.08, 0.34) * size)
        top = max(0, horizon - bh)
        v = int(rng.integers(95, 185))
        colour = _jitter(rng, (v, v, v), 14)
        cv2.rectangle(img, (x, top), (x + bw, base_line), colour, -1)
        ww, wh = max(2, int(rng.integers(3, 6) * k)), max(2, int(rng.integers(3, 7) * k))
        gx, gy = ww + max(1, int(rng.integers(2, 5) * k)), wh + max(1, int(rng.integers(3, 6) * k))
        wcol = _jitter(rng, (int(v * 0.55), int(v * 0.55), int(v * 0.5)), 10)
        if rng.random() < 0.4:
            wcol = _jitter(rng, (190, 175, 150), 12)  # sky reflections
        for wy in range(top + gy // 2, base_line - wh - int(4 * k), gy):
            for wx in range(x + gx // 2, x + bw - ww, gx):
                cv2.rectangle(img, (wx, wy), (wx + ww - 1, wy + wh - 1), wcol, -1)
                windows.append((wx, wy, ww, wh))
        x += bw + int(rng.integers(0, int(6 * k) + 1))
    return windows


def _draw_ground(img: np.ndarray, rng: np.random.Generator, horizon: int, k: float) -> _Road:
    size = img.shape[0]
    side = _jitter(rng, (165, 168, 170), 12)
    img[horizon:] = side
    vx = float(rng.uniform(0.38, 0.62) * size)
    half = float(rng.uniform(0.55, 0.8) * size)
    road = _Road(horizon, size, vx, vx - half, vx + half)
    v = int(rng.integers(60, 100))
    asphalt = _jitter(rng, (v, v, v + 4), 6)
    apex = max(1, int(2 * k))
    poly = np.array(
        [[vx - apex, horizon], [vx + apex, horizon], [road.right_bottom, size], [road.left_bottom, size]],
        np.int32,
    )
    cv2.fillPoly(img, [poly], asphalt, cv2.LINE_AA)
    # lane marks: dashes that grow towards the camera
    lanes = (0.5,) if rng.random() < 0.5 else (1 / 3, 2 / 3)
    mark = (235, 235, 235) if rng.random() < 0.7 else (40, 200, 235)
    for f in lanes:
        xb = road.left_bottom + f * (road.right_bottom - road.left_bottom)
        s = float(rng.uniform(0.04, 0.07))
        while s < 1.0:
            s1 = min(1.0, s * 1.18)
            ya, yb = road.y_at(s), road.y_at(s1)
            xa, xbb = vx + (xb - vx) * s, vx + (xb - vx) * s1
            wa, wb = max(0.5, 3.0 * k * s), max(0.5, 3.0 * k * s1)
            quad = np.array([[xa - wa, ya], [xa + wa, ya], [xbb + wb, yb], [xbb - wb, yb]], np.int32)
            cv2.fillPoly(img, [quad], mark, cv2.LINE_AA)
            s = s * 1.42
    # kerb lines
    for xbot in (road.left_bottom, road.right_bottom):
        cv2.line(img, (int(vx), horizon), (int(xbot), size), (205, 205, 205), max(1, int(1.5 * k)), cv2.LINE_AA)
    return road


def _depth(rng: np.random.Generator, lo: float, hi: float = 1.0, power: float = 1.0) -> float:
    """A depth in [lo, hi] (0 = horizon, 1 = bottom edge); power > 1 favours far (small) objects."""
    return lo + (hi - lo) * float(rng.random()) ** power


def _draw_distractors(img: np.ndarray, rng: np.random.Generator, road: _Road, k: float, lights: list[_Light]) -> None:
    """Lamp posts (the light sources of night images) and trees; they carry no boxes."""
    for _ in range(int(rng.integers(1, 4))):  # lamp posts
        s = _depth(rng, 0.15, 0.9, 1.0)
        foot = road.y_at(s)
        xl, xr = road.span(foot)
        x = (xl - rng.uniform(2, 8) * k * s) if rng.random() < 0.5 else (xr + rng.uniform(2, 8) * k * s)
        height = s * rng.uniform(110, 150) * k
        top = foot - height
        t = max(1, round(2.0 * k * s))
        arm = (1 if x < road.vx else -1) * s * 14 * k
        cv2.line(img, (int(x), int(foot)), (int(x), int(top)), (95, 95, 100), t, cv2.LINE_AA)
        cv2.line(img, (int(x), int(top)), (int(x + arm), int(top)), (95, 95, 100), t, cv2.LINE_AA)
        hx, hy = int(x + arm), int(top + 2 * k * s)
        cv2.ellipse(img, (hx, hy), (max(1, int(4 * k * s)), max(1, int(2 * k * s))), 0, 0, 360, (200, 210, 215), -1)
        warm = (0.55, 0.8, 1.0) if rng.random() < 0.7 else (1.0, 0.95, 0.9)
        lights.append(_Light(hx, hy, max(1.2, 3.0 * k * s), warm, 1.0))  # the lamp itself
        lights.append(_Light(hx, hy, max(4.0, 14.0 * k * s), warm, 0.25))  # its halo
        lights.append(_Light(hx, foot, max(6.0, 38.0 * k * s), warm, float(rng.uniform(0.3, 0.6)), pool=True))
    for _ in range(int(rng.integers(0, 3))):  # trees
        s = _depth(rng, 0.15, 0.8, 1.0)
        foot = road.y_at(s)
        xl, xr = road.span(foot)
        x = (xl - rng.uniform(5, 20) * k * s) if rng.random() < 0.5 else (xr + rng.uniform(5, 20) * k * s)
        height = s * rng.uniform(70, 110) * k
        trunk = (40, 60, 90)
        cv2.line(img, (int(x), int(foot)), (int(x), int(foot - height * 0.6)), trunk, max(1, int(3 * k * s)))
        green = _jitter(rng, (40, 120, 50), 20)
        for _ in range(3):
            cx = int(x + rng.uniform(-0.15, 0.15) * height)
            cy = int(foot - height * rng.uniform(0.65, 0.85))
            cv2.circle(img, (cx, cy), max(2, int(height * rng.uniform(0.18, 0.26))), green, -1, cv2.LINE_AA)


# --------------------------------------------------------------------------- objects


def _propose(cls: int, rng: np.random.Generator, road: _Road, k: float) -> _Object:
    size = road.size
    if cls == CAR:
        s = _depth(rng, 0.12)
        w = round(float(np.clip(s * rng.uniform(85, 110), 14, 120)) * k)
        h = max(6, round(w * rng.uniform(0.5, 0.6)))
        foot = road.y_at(s)
        xl, xr = road.span(foot)
        xc = rng.uniform(xl + 0.2 * w, xr - 0.2 * w) if xr - xl > 0.4 * w else (xl + xr) / 2
        params = {
            "colour": _jitter(rng, _pick(rng, _CAR_COLOURS), 20),
            "facing_right": bool(rng.random() < 0.5),
        }
        return _Object(CAR, round(xc - w / 2), round(foot) - h, w, h, foot, params)
    if cls == PERSON:
        s = _depth(rng, 0.12)
        h = round(float(np.clip(s * rng.uniform(95, 125), 15, 130)) * k)
        w = max(5, round(h * rng.uniform(0.32, 0.42)))
        foot = road.y_at(s)
        xc = rng.uniform(0, size)
        params = {
            "shirt": _jitter(rng, _pick(rng, _SHIRT_COLOURS), 20),
            "skin": _pick(rng, _SKIN_COLOURS),
            "pants": _pick(rng, _PANTS_COLOURS),
            "stride": float(rng.uniform(0.0, 1.0)),
        }
        return _Object(PERSON, round(xc - w / 2), round(foot) - h, w, h, foot, params)
    s = _depth(rng, 0.15, 0.9, 1.2)
    w = round(float(np.clip(s * rng.uniform(20, 30), 7, 20)) * k)
    w = max(4, w)
    h = round(w * rng.uniform(2.5, 2.8))
    foot = road.y_at(s)
    xl, xr = road.span(foot)
    xc = (xl - rng.uniform(2, 12) * k * s) if rng.random() < 0.5 else (xr + rng.uniform(2, 12) * k * s)
    pole = round(s * rng.uniform(50, 90) * k)
    bottom = round(foot) - pole
    params = {"lit": int(rng.integers(3)), "housing": _jitter(rng, (32, 32, 32), 10)}
    return _Object(TRAFFIC_LIGHT, round(xc - w / 2), bottom - h, w, h, foot, params)


def _overlaps(box: tuple[float, float, float, float], boxes: list[tuple[float, float, float, float]]) -> bool:
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    for bx0, by0, bx1, by1 in boxes:
        iw, ih = min(x1, bx1) - max(x0, bx0), min(y1, by1) - max(y0, by0)
        if iw > 0 and ih > 0:
            inter = iw * ih
            if inter > 0.2 * min(area, (bx1 - bx0) * (by1 - by0)):
                return True
    return False


def _place_objects(rng: np.random.Generator, road: _Road, k: float) -> list[_Object]:
    n = int(rng.integers(3, 8))
    classes = rng.choice(np.array([CAR, PERSON, TRAFFIC_LIGHT]), size=n, p=np.array(CLASS_PROBS))
    placed: list[_Object] = []
    boxes: list[tuple[float, float, float, float]] = []
    for cls in classes:
        for _ in range(25):
            obj = _propose(int(cls), rng, road, k)
            if obj.visible(road.size) < _MIN_VISIBLE:
                continue
            box = obj.box(road.size)
            if _overlaps(box, boxes):
                continue
            placed.append(obj)
            boxes.append(box)
            break
    placed.sort(key=lambda o: o.foot)  # painter's order: far objects first
    return placed


def _draw_car(obj: _Object, lights: list[_Light]) -> _Pen:
    w, h = obj.w, obj.h
    pen = _Pen(h, w)
    colour = obj.params["colour"]
    right = obj.params["facing_right"]
    rw = max(2, round(0.2 * h))
    wheel_y = h - 1 - rw
    body_top = round(0.4 * h)
    body_bot = min(h - 1, wheel_y + max(1, rw // 2))
    pen.rrect(0, body_top, w - 1, body_bot, int(0.18 * h), colour)
    c0, c1 = (int(0.18 * w), int(0.72 * w)) if right else (int(0.28 * w), int(0.82 * w))
    pen.rrect(c0, 0, c1, body_top + max(1, int(0.1 * h)), int(0.16 * h), colour)
    inset = max(1, round(0.06 * h))
    win = (45, 35, 30)
    wy0, wy1 = inset, body_top - 1
    if wy1 > wy0 and c1 - c0 > 2 * inset + 2:
        mid = (c0 + c1) // 2
        gap = max(1, round(0.03 * w))
        pen.rect(c0 + inset, wy0, mid - gap, wy1, win)
        pen.rect(mid + gap, wy0, c1 - inset, wy1, win)
    for wx in (int(0.22 * w), int(0.78 * w)):
        pen.circle(wx, wheel_y, rw, (20, 20, 20))
        if rw >= 3:
            pen.circle(wx, wheel_y, max(1, rw // 2), (150, 150, 150))
    lh = max(1, round(0.1 * h))
    ly = body_top + max(1, int(0.12 * h))
    lw = max(1, round(0.05 * w))
    front, back = (w - 1 - lw, 0) if right else (0, w - 1 - lw)
    pen.rect(front, ly, front + lw, ly + lh, (170, 240, 255))
    pen.rect(back, ly, back + lw, ly + lh, (30, 30, 210))
    fx, bx, cy = obj.x0 + front + lw / 2, obj.x0 + back + lw / 2, obj.y0 + ly + lh / 2
    lights.append(_Light(fx, cy, max(1.0, 0.06 * w), (0.75, 0.95, 1.0), 0.9))
    lights.append(_Light(fx, cy, max(2.0, 0.2 * w), (0.75, 0.95, 1.0), 0.2))
    lights.append(_Light(bx, cy, max(1.0, 0.05 * w), (0.15, 0.15, 1.0), 0.6))
    return pen


def _draw_person(obj: _Object) -> _Pen:
    w, h = obj.w, obj.h
    pen = _Pen(h, w)
    p = obj.params
    r = max(1, round(0.1 * h))
    cx = w // 2
    torso_top, torso_bot = 2 * r, round(0.58 * h)
    limb = max(1, round(0.14 * w))
    leg = max(1, round(0.17 * w))
    # legs (with a walking stride)
    spread = p["stride"] * 0.35 * w
    hip = torso_bot - 1
    pen.line((int(cx - 0.12 * w), hip), (round(cx - 0.12 * w - spread), h - 1 - leg // 2), leg, p["pants"])
    pen.line((int(cx + 0.12 * w), hip), (round(cx + 0.12 * w + spread), h - 1 - leg // 2), leg, p["pants"])
    # arms
    pen.line((int(0.22 * w), torso_top + 1), (limb // 2, int(0.56 * h)), limb, p["shirt"])
    pen.line((w - 1 - int(0.22 * w), torso_top + 1), (w - 1 - limb // 2, int(0.56 * h)), limb, p["shirt"])
    pen.rrect(int(0.2 * w), torso_top, w - 1 - int(0.2 * w), torso_bot, max(1, int(0.1 * w)), p["shirt"])
    pen.circle(cx, r, r, p["skin"])
    return pen


def _draw_traffic_light(obj: _Object, scene: np.ndarray, lights: list[_Light]) -> _Pen:
    w, h = obj.w, obj.h
    p = obj.params
    xc = obj.x0 + w // 2
    cv2.line(scene, (xc, obj.y0 + h), (xc, round(obj.foot)), (70, 70, 75), max(1, round(0.22 * w)), cv2.LINE_AA)
    pen = _Pen(h, w)
    pen.rrect(0, 0, w - 1, h - 1, max(1, int(0.2 * w)), p["housing"])
    r = max(1, round(0.3 * w))
    for i, cy in enumerate((h / 6, h / 2, 5 * h / 6)):
        lit = i == p["lit"]
        colour = _TL_LAMPS[i] if lit else (55, 55, 60)
        pen.circle(w // 2, round(cy), r, colour)
        if lit:
            bgr = tuple(c / 255.0 for c in _TL_LAMPS[i])
            lights.append(_Light(obj.x0 + w / 2, obj.y0 + cy, max(1.0, 1.3 * r), bgr, 0.9))
    return pen


# --------------------------------------------------------------------------- photometry


def _add_glow(img: np.ndarray, light: _Light, sx: float | None = None, sy: float | None = None) -> None:
    """Add a Gaussian blob (in place) on a float image in 0..1, computed on a window only."""
    sx = light.sigma if sx is None else sx
    sy = light.sigma if sy is None else sy
    h, w = img.shape[:2]
    x0, x1 = max(0, int(light.x - 3 * sx)), min(w, int(light.x + 3 * sx) + 2)
    y0, y1 = max(0, int(light.y - 3 * sy)), min(h, int(light.y + 3 * sy) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    gx = np.exp(-0.5 * ((np.arange(x0, x1, dtype=np.float32) - light.x) / sx) ** 2)
    gy = np.exp(-0.5 * ((np.arange(y0, y1, dtype=np.float32) - light.y) / sy) ** 2)
    g = (gy[:, None] * gx[None, :]) * light.amp
    img[y0:y1, x0:x1] += g[..., None] * np.asarray(light.colour, np.float32)


def _day(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Daylight: small exposure and contrast changes and a faint luminance grain."""
    x = img.astype(np.float32)
    gain, contrast = float(rng.uniform(0.85, 1.1)), float(rng.uniform(0.9, 1.1))
    m = float(x.mean()) * gain
    x *= np.float32(gain * contrast)
    x += np.float32(m * (1.0 - contrast) + 0.5)  # + 0.5: round half up in the cast below
    grain = rng.standard_normal(img.shape[:2], dtype=np.float32)
    grain *= np.float32(rng.uniform(1.0, 2.5))
    x += grain[..., None]
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _night(
    img: np.ndarray, rng: np.random.Generator, lights: list[_Light], windows: list[tuple[int, int, int, int]]
) -> np.ndarray:
    """Night: the same scene darkened under a colour cast, lit by lamps and glows, degraded like a poor sensor."""
    size_h, size_w = img.shape[:2]
    x = img.astype(np.float32)
    # illumination: a dim base level plus light pools under the street lamps
    illum = np.full((size_h, size_w, 1), np.float32(rng.uniform(0.1, 0.2)), np.float32)
    for light in lights:
        if light.pool:  # wider than tall, in grey: the colour cast comes next
            pool = _Light(light.x, light.y, light.sigma, (1.0,), light.amp)
            _add_glow(illum, pool, sy=light.sigma * 0.45)
    illum = np.minimum(illum, 0.8)
    casts = ((0.7, 0.88, 1.15), (1.2, 1.0, 0.8), (0.95, 1.0, 1.0))
    cast = np.asarray(_pick(rng, casts), np.float32) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    x *= illum
    x *= cast / np.float32(255.0)  # now in 0..1
    # emissive things: lit windows, lamps, car lights, traffic-light discs
    if windows:
        lit = rng.random(len(windows)) < rng.uniform(0.15, 0.45)
        warm = np.asarray((0.45, 0.75, 0.95), np.float32) * np.float32(rng.uniform(0.35, 0.7))
        for (wx, wy, ww, wh), on in zip(windows, lit, strict=True):
            if on:
                x[max(0, wy) : wy + wh, max(0, wx) : wx + ww] += warm
    for light in lights:
        if not light.pool:
            _add_glow(x, light)
    # glare: a wide soft veil and sometimes a horizontal streak from a bright source
    if rng.random() < 0.6:
        sources = [light for light in lights if not light.pool]
        src = sources[int(rng.integers(len(sources)))] if sources else None
        gx = src.x if src is not None else rng.uniform(0, size_w)
        gy = src.y if src is not None else rng.uniform(0, size_h)
        s = float(rng.uniform(0.1, 0.25) * size_w)
        _add_glow(x, _Light(gx, gy, s, (0.8, 0.9, 1.0), float(rng.uniform(0.08, 0.22))))
        if rng.random() < 0.5:
            streak = _Light(gx, gy, 1.0, (0.85, 0.95, 1.0), float(rng.uniform(0.15, 0.35)))
            _add_glow(x, streak, sx=float(rng.uniform(0.15, 0.35) * size_w), sy=max(1.0, 0.006 * size_w))
    # low contrast, slight blur, sensor noise
    m = float(x.mean())
    contrast, lift = float(rng.uniform(0.7, 0.9)), float(rng.uniform(0.01, 0.035))
    x *= np.float32(contrast)
    x += np.float32(m * (1.0 - contrast) + lift)
    x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.6, 1.1)))
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(0.015, 0.03))
    x += noise
    grain = rng.standard_normal((size_h, size_w), dtype=np.float32)
    grain *= np.float32(0.01)
    x += grain[..., None]  # luminance grain
    x *= np.float32(255.0)
    x += np.float32(0.5)  # round half up in the cast below
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def render_scene(
    rng: np.random.Generator, size: int, night: bool
) -> tuple[np.ndarray, list[tuple[int, tuple[float, float, float, float]]]]:
    """Draw one scene; return the BGR uint8 image and its (category id, xyxy box) list."""
    k = size / 256.0
    img = np.zeros((size, size, 3), np.uint8)
    horizon = round(size * rng.uniform(0.36, 0.48))
    _draw_sky(img, rng, horizon)
    windows = _draw_buildings(img, rng, horizon, k)
    road = _draw_ground(img, rng, horizon, k)
    lights: list[_Light] = []
    _draw_distractors(img, rng, road, k, lights)
    boxes: list[tuple[int, tuple[float, float, float, float]]] = []
    for obj in _place_objects(rng, road, k):
        obj_lights: list[_Light] = []
        if obj.cls == CAR:
            pen = _draw_car(obj, obj_lights)
        elif obj.cls == PERSON:
            pen = _draw_person(obj)
        else:
            pen = _draw_traffic_light(obj, img, obj_lights)
        box = _composite(img, pen, obj.x0, obj.y0)
        if box is not None:
            boxes.append((obj.cls, box))
            lights.extend(obj_lights)
    out = _night(img, rng, lights, windows) if night else _day(img, rng)
    return out, boxes


# --------------------------------------------------------------------------- files


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_bytes(obj: Any, indent: int | None = None) -> bytes:
    return (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _paths(out_dir: Path) -> dict[str, Path]:
    return {
        "labeled_annotations": out_dir / "labeled.json",
        "labeled_images": out_dir / "labeled" / "images",
        "val_annotations": out_dir / "val.json",
        "val_images": out_dir / "val" / "images",
        "pool_annotations": out_dir / "pool.json",
        "pool_images": out_dir / "pool" / "images",
        "oracle": out_dir / "pool_oracle.json",
    }


def _night_flags(seed: int, split: str, n: int, frac: float) -> np.ndarray:
    """Exactly round(n * frac) night images, at seeded positions."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], _NIGHT_STREAM]))
    flags = np.zeros(n, bool)
    flags[rng.permutation(n)[: round(n * frac)]] = True
    return flags


def _coco(split: str, seed: int, images: list[dict[str, Any]], anns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "info": {
            "description": f"detst synthetic day/night street scenes, split {split}",
            "version": str(GENERATOR_VERSION),
            "contributor": "detst datasets.daynight",
            "seed": int(seed),
        },
        "licenses": [{"id": 1, "name": "CC0-1.0 (synthetic data)", "url": ""}],
        "images": images,
        "annotations": anns,
        "categories": [dict(c) for c in CATEGORIES],
    }


def _manifest_matches(out_dir: Path, args: dict[str, Any]) -> bool:
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("generator_version") != GENERATOR_VERSION or manifest.get("args") != args:
        return False
    files = manifest.get("files", {})
    for name, digest in files.items():
        try:
            if _sha256((out_dir / name).read_bytes()) != digest:
                return False
        except OSError:
            return False
    for split in SPLITS:
        if f"{split}.json" not in files:
            return False
        coco = json.loads((out_dir / f"{split}.json").read_text(encoding="utf-8"))
        folder = out_dir / split / "images"
        if not all((folder / im["file_name"]).is_file() for im in coco["images"]):
            return False
    return "pool_oracle.json" in files


def _stats(cocos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Class shares and size buckets over every true box (labeled, val, pool oracle)."""
    names = {c["id"]: c["name"] for c in CATEGORIES}
    counts = dict.fromkeys(names.values(), 0)
    buckets = {"small": 0, "medium": 0, "large": 0}
    splits: dict[str, Any] = {}
    total = 0
    for split, coco in cocos.items():
        n_img = len(coco["images"])
        n_night = sum(im["attributes"]["timeofday"] == "night" for im in coco["images"])
        splits[split] = {
            "images": n_img,
            "night_images": n_night,
            "night_fraction": round(n_night / n_img, 4) if n_img else 0.0,
            "boxes": len(coco["annotations"]),
            "boxes_per_image": round(len(coco["annotations"]) / n_img, 3) if n_img else 0.0,
        }
        for a in coco["annotations"]:
            counts[names[a["category_id"]]] += 1
            area = a["area"]
            buckets["small" if area < SMALL_AREA else "medium" if area < MEDIUM_AREA else "large"] += 1
            total += 1
    return {
        "boxes": total,
        "class_share": {k: round(v / total, 4) if total else 0.0 for k, v in counts.items()},
        "size_share": {k: round(v / total, 4) if total else 0.0 for k, v in buckets.items()},
        "splits": splits,
    }


def _tasks(seed: int, counts: dict[str, int], fracs: dict[str, float]) -> Iterator[tuple[str, int, bool]]:
    for split in SPLITS:
        flags = _night_flags(seed, split, counts[split], fracs[split])
        for i in range(counts[split]):
            yield split, i, bool(flags[i])


def generate(
    out_dir: Path,
    seed: int = 0,
    n_labeled: int = 300,
    n_val: int = 160,
    n_pool: int = 3000,
    imgsz: int = 256,
    labeled_night_frac: float = 0.1,
    val_night_frac: float = 0.5,
    pool_night_frac: float = 0.5,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate the day/night data set into ``out_dir`` and return the paths of its parts.

    Returns a dict with ``labeled_annotations``, ``labeled_images``, ``val_annotations``,
    ``val_images``, ``pool_annotations`` (COCO without annotations), ``pool_images`` and
    ``oracle`` (the pool's true boxes). A second call with the same arguments whose
    manifest still matches the files on disk returns at once and writes nothing.
    """
    out_dir = Path(out_dir)
    counts = {"labeled": int(n_labeled), "val": int(n_val), "pool": int(n_pool)}
    fracs = {"labeled": float(labeled_night_frac), "val": float(val_night_frac), "pool": float(pool_night_frac)}
    for name, n in counts.items():
        if n < 0:
            raise ValueError(f"n_{name} must be >= 0, got {n}")
    for name, f in fracs.items():
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"{name}_night_frac must be in [0, 1], got {f}")
    if int(imgsz) < 64:
        raise ValueError(f"imgsz must be >= 64, got {imgsz}")
    args: dict[str, Any] = {
        "seed": int(seed),
        "n_labeled": counts["labeled"],
        "n_val": counts["val"],
        "n_pool": counts["pool"],
        "imgsz": int(imgsz),
        "labeled_night_frac": fracs["labeled"],
        "val_night_frac": fracs["val"],
        "pool_night_frac": fracs["pool"],
    }
    paths = _paths(out_dir)
    if _manifest_matches(out_dir, args):
        if progress:
            print(f"daynight: {out_dir} is up to date (manifest matches)", file=sys.stderr)
        return paths

    start = time.perf_counter()
    images: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    anns: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    image_digests: list[str] = []
    total = sum(counts.values())
    bar = tqdm(total=total, desc="daynight", unit="img", disable=not progress, leave=False)
    try:
        for split, i, night in _tasks(int(seed), counts, fracs):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODES[split], i]))
            img, boxes = render_scene(rng, int(imgsz), night)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {split} image {i}")
            data = buf.tobytes()
            file_name = f"{split}_{i:06d}.jpg"
            _atomic_write(out_dir / split / "images" / file_name, data)
            image_digests.append(f"{split}/images/{file_name}:{_sha256(data)}")
            image_id = i + 1
            images[split].append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": int(imgsz),
                    "height": int(imgsz),
                    "license": 1,
                    "attributes": {"timeofday": "night" if night else "day"},
                }
            )
            for cls, (x0, y0, x1, y1) in boxes:
                w, h = x1 - x0, y1 - y0
                anns[split].append(
                    {
                        "id": len(anns[split]) + 1,
                        "image_id": image_id,
                        "category_id": int(cls),
                        "bbox": [float(x0), float(y0), float(w), float(h)],
                        "area": float(w * h),
                        "iscrowd": 0,
                        "segmentation": [],
                    }
                )
            bar.update(1)
    finally:
        bar.close()

    # remove images of an earlier, larger generation that this one does not own any more
    for split in SPLITS:
        keep = {im["file_name"] for im in images[split]}
        for old in (out_dir / split / "images").glob(f"{split}_*.jpg"):
            if old.name not in keep:
                old.unlink()

    cocos = {s: _coco(s, int(seed), images[s], anns[s]) for s in SPLITS}
    truth = {"labeled": cocos["labeled"], "val": cocos["val"], "pool": cocos["pool"]}
    stats = _stats(truth)
    oracle = _coco("pool (oracle)", int(seed), images["pool"], anns["pool"])
    pool = _coco("pool", int(seed), images["pool"], [])
    outputs = {
        "labeled.json": _json_bytes(cocos["labeled"]),
        "val.json": _json_bytes(cocos["val"]),
        "pool.json": _json_bytes(pool),
        "pool_oracle.json": _json_bytes(oracle),
    }
    for name, data in outputs.items():
        _atomic_write(out_dir / name, data)
    files = {name: _sha256(data) for name, data in outputs.items()}
    content = hashlib.sha256()
    for line in sorted(image_digests) + [f"{n}:{d}" for n, d in sorted(files.items())]:
        content.update(line.encode("utf-8") + b"\n")
    manifest = {
        "generator": "datasets.daynight",
        "generator_version": GENERATOR_VERSION,
        "args": args,
        "files": files,
        "content_hash": content.hexdigest(),
        "stats": stats,
    }
    _atomic_write(out_dir / "manifest.json", _json_bytes(manifest, indent=2))
    if progress:
        print(f"daynight: wrote {out_dir}\n{_summary(stats, time.perf_counter() - start)}", file=sys.stderr)
    return paths


def _summary(stats: dict[str, Any], seconds: float | None = None) -> str:
    cls = ", ".join(f"{k} {v:.1%}" for k, v in stats["class_share"].items())
    size = stats["size_share"]
    head = f"{stats['boxes']} boxes: {cls}; "
    head += f"small {size['small']:.1%}, medium {size['medium']:.1%}, large {size['large']:.1%}"
    parts = [head]
    for split, s in stats["splits"].items():
        parts.append(f"{split}: {s['images']} images, {s['night_fraction']:.1%} night, {s['boxes_per_image']:.2f} boxes/image")
    if seconds is not None:
        parts.append(f"generated in {seconds:.1f} s")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m datasets.daynight --out DIR [--seed N] ...``."""
    p = argparse.ArgumentParser(prog="python -m datasets.daynight", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-labeled", type=int, default=300)
    p.add_argument("--n-val", type=int, default=160)
    p.add_argument("--n-pool", type=int, default=3000)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--labeled-night-frac", type=float, default=0.1)
    p.add_argument("--val-night-frac", type=float, default=0.5)
    p.add_argument("--pool-night-frac", type=float, default=0.5)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    paths = generate(
        a.out,
        seed=a.seed,
        n_labeled=a.n_labeled,
        n_val=a.n_val,
        n_pool=a.n_pool,
        imgsz=a.imgsz,
        labeled_night_frac=a.labeled_night_frac,
        val_night_frac=a.val_night_frac,
        pool_night_frac=a.pool_night_frac,
        progress=not a.quiet,
    )
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
