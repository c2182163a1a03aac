"""Device names as users write them (``auto``, ``cpu``, ``cuda``, ``cuda:1``), checked against
this machine so that a missing GPU is one clear message rather than a driver traceback."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str, *, what: str = "--device") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name must exist on this machine,
    else :class:`ValueError` naming ``what`` (the flag or config key) and what to use."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{what} {name!r}: CUDA is not available on this machine (no GPU, driver or "
                "CUDA build of torch); use cpu or auto"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{what} {name!r}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{what} {name!r}: MPS is not available here; use cpu or auto")
    elif dev.type != "cpu":
        raise ValueError(f"{what} {name!r}: fcnseg runs on cpu, cuda or mps (or auto)")
    return dev
