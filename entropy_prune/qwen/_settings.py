"""Selection settings of the wrapped processors: names, defaults and validation."""

from __future__ import annotations

import difflib
from typing import Any

from .._image import check_real
from ..selection import _check_downscale as check_downscale
from ..selection import check_settings as check_selection

SETTINGS = {
    "patch_selection_method": "budget",
    "alpha": 0.3,
    "thresholds": None,
    "num_scales": 3,
    "mode": "multiscale",
    "score": None,
    "temporal_threshold": None,
    "tolerance": None,
    "downscale": False,
    "shapes": "squares",
}
"""Selection settings a wrapped processor accepts (per call, as attributes, or at construction),
with their defaults. Values are validated by :func:`entropy_prune.select_patches`."""


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


def is_none_method(method: Any) -> bool:
    return method is None or (isinstance(method, str) and method == "none")


def is_stock(settings: dict) -> bool:
    """The settings prune nothing: method None / "none", no ``tolerance``, no ``downscale``."""
    return (is_none_method(settings["patch_selection_method"]) and settings.get("tolerance") is None
            and not settings.get("downscale"))


def check_call_keywords(kwargs: dict, valid: set[str], where: str, strict: bool) -> None:
    """TypeError for a keyword of a call that the processor would drop or choke on: with
    ``strict`` any keyword outside ``valid`` (the ``images_kwargs`` / ``videos_kwargs`` dicts, whose
    stock typed-dict error names no setting), else one that is not valid but resembles a selection
    setting (a typo the stock processor only logs, then runs with the default)."""
    for key in kwargs:
        if key in valid:
            continue
        close = difflib.get_close_matches(key, SETTINGS, n=1, cutoff=0.75)
        if not (strict or close):
            continue
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        others = sorted(valid - set(SETTINGS)) if strict else []
        raise TypeError(
            f"unknown setting {key!r} in {where}{hint}. Selection settings: {sorted(SETTINGS)}"
            + (f"; other valid keys: {others}" if others else "")
        )


def keeps_all(settings: dict) -> bool:
    """Valid ``settings`` keep every unit of every item, whatever the content."""
    method = settings["patch_selection_method"]
    if settings.get("tolerance") is not None:
        return False
    return is_none_method(method) or (method == "budget" and float(settings["alpha"]) == 1.0)


def check(settings: dict) -> None:
    """Raise ValueError/TypeError now for settings the core selection would reject."""
    check_call_keywords(settings, set(SETTINGS), "the selection settings", True)
    keys = ("patch_selection_method", "alpha", "thresholds", "num_scales", "mode", "score", "tolerance", "shapes")
    check_selection(*(settings[k] for k in keys))
    downscale = check_downscale(settings["downscale"])
    if downscale and settings["patch_selection_method"] != "budget":
        raise ValueError(f"downscale={downscale!r} needs patch_selection_method='budget' (it fits the image to "
                         f"the budget), got {settings['patch_selection_method']!r}")
    if settings["temporal_threshold"] is not None:
        check_real("temporal_threshold", settings["temporal_threshold"], low=0, low_open=True,
                   meaning="luma change in [0, 1] units; or None")
