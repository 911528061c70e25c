"""The exception types detst raises; every message names the file and the key."""

from __future__ import annotations


class DetstError(Exception):
    """Base of all detst errors."""


class ConfigError(DetstError):
    """A config file is malformed: unknown key, wrong type, value out of range, conflict."""


class DatasetError(DetstError):
    """An input dataset (COCO, YOLO, image folder) is malformed or missing."""


class RunLockedError(DetstError):
    """Another process holds the run folder."""


class StageError(DetstError):
    """A stage cannot go on with what it was given (e.g. zero pseudo-labels)."""
