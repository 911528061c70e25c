"""Named augmentation policies (weak / strong / night / user-defined) from the YAML,
built as albumentations 2.x transforms and validated at config load.

A policy is a list of one-key mappings ``{TransformName: {arg: value}}``. An unknown
transform or argument, or one albumentations only warns about (renamed/deprecated
arguments), is a ConfigError naming the key path. Pixel-level transforms are the norm:
ultralytics' own mosaic/scale/flip do the geometry and keep the boxes in step.
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from typing import Any

from detst.errors import ConfigError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402

Policy = list[dict[str, dict[str, Any]]]


def _transform_names() -> list[str]:
    return [n for n, obj in vars(A).items()
            if inspect.isclass(obj) and issubclass(obj, A.BasicTransform) and not n.startswith("_")]


def build_transform(name: str, args: dict[str, Any], key: str, source: str = "config") -> A.BasicTransform:
    """One transform from its name and arguments; warnings of albumentations are errors."""
    cls = getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, A.BasicTransform)):
        close = difflib.get_close_matches(name, _transform_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{source}: {key} is not an albumentations transform: {name!r}{hint}")
    if not isinstance(args, dict):
        raise ConfigError(f"{source}: {key}.{name} arguments must be a mapping, got {args!r}")
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    for arg in args:
        if arg not in params:
            close = difflib.get_close_matches(arg, sorted(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: {key}.{name}.{arg} is not an argument of {name}{hint}; "
                              f"valid: {sorted(params)}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return cls(**args)
        except Exception as e:  # noqa: BLE001 - albumentations raises many kinds (pydantic, UserWarning, ...)
            raise ConfigError(f"{source}: {key}.{name} rejected its arguments {args}: {e}") from e


def build_policy(policy: Policy, key: str = "augment", source: str = "config") -> list[A.BasicTransform]:
    out = []
    for i, entry in enumerate(policy):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(f"{source}: {key}[{i}] must be a one-key mapping {{Transform: {{args}}}}, got {entry!r}")
        (name, args), = entry.items()
        out.append(build_transform(name, args or {}, f"{key}[{i}]", source))
    return out


def validate_policies(policies: dict[str, Policy], source: str = "config") -> None:
    for name, policy in policies.items():
        if not isinstance(policy, list):
            raise ConfigError(f"{source}: augment.{name} must be a list of transforms, got {policy!r}")
        build_policy(policy, f"augment.{name}", source)


def describe_policy(transforms: list[A.BasicTransform]) -> list[dict[str, Any]]:
    """The resolved policy, every argument written out (albumentations' own serialisation)."""
    return [A.to_dict(t)["transform"] for t in transforms]
