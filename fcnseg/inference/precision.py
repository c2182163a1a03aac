"""``--precision fp32|bf16|int8``: what each means for a checkpoint and for an exported file.

A checkpoint runs in fp32 or under bf16 autocast (:func:`fcnseg.forward.forward`); int8 is a
property of a file — an ONNX export quantized with ``fcnseg export --quantize int8`` — so it is
asked of such a file, not of a checkpoint. An ``.onnx`` file runs at the precision it was
exported at: asking for another one is an error rather than a silent no-op.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["PRECISIONS", "autocast_for"]

#: The values of ``--precision``.
PRECISIONS = ("fp32", "bf16", "int8")


def autocast_for(source: str | Path, precision: str | None) -> str | None:
    """The Predictor's ``amp`` for running ``source`` (a checkpoint, run folder, weights name or
    ``.onnx`` file) at ``precision`` (``None``: the source's default); raises ``ValueError``
    with what to do when ``source`` cannot run at it."""
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if str(source).endswith(".onnx"):
        if precision is None or not Path(source).is_file():
            return None  # a missing file is reported by the loader
        from fcnseg.export import read_onnx_metadata

        try:
            exported = read_onnx_metadata(source).get("precision") or "fp32"
        except ValueError:
            return None  # not an fcnseg export: the loader says so
        if precision != exported:
            hint = ""
            if precision == "int8":
                hint = "; for int8, quantize the checkpoint: fcnseg export CKPT --quantize int8 "
                hint += "--calibrate IMAGES -o model-int8.onnx"
            raise ValueError(
                f"{source} is an {exported} export and runs at {exported}: drop --precision "
                f"{precision}{hint}"
            )
        return None
    if precision == "int8":
        raise ValueError(
            f"int8 runs an int8 ONNX export, not a checkpoint: fcnseg export {source} --quantize "
            "int8 --calibrate IMAGES -o model-int8.onnx, then use model-int8.onnx"
        )
    return None if precision in (None, "fp32") else precision
