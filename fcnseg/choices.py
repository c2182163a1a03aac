"""Messages for a name that is not among the valid ones: the nearest names (difflib) and the
full list, e.g. ``unknown backbone 'resnet34'; did you mean 'resnet18' or 'resnet50'? choices:
alexnet, …``. A leaf module: no fcnseg or heavy imports."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "unknown_choice"]


def did_you_mean(value: object, choices: Iterable[object], *, n: int = 3) -> str:
    """``"did you mean 'a' or 'b'? "`` for the choices nearest ``value`` (case-insensitive),
    or ``""`` when none is close."""
    names = [str(c) for c in choices]
    lowered = {name.lower(): name for name in names}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=n, cutoff=0.6)
    if not close:
        return ""
    quoted = [repr(lowered[c]) for c in close]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"did you mean {listed}? "


def unknown_choice(
    what: str,
    value: object,
    choices: Iterable[object],
    *,
    where: str = "",
    label: str = "choices",
) -> str:
    """``"unknown {what} {value!r}{where}; did you mean …? {label}: a, b, c"`` (``where``
    e.g. ``" for camvid"``); the choices keep their given order."""
    names = [str(c) for c in choices]
    listed = ", ".join(names) if names else "(none)"
    return f"unknown {what} {value!r}{where}; {did_you_mean(value, names)}{label}: {listed}"
