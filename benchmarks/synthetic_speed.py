"""How fast the demo's generated shapes are rendered (no cache): every image of a split, timed.

    .venv/bin/python benchmarks/synthetic_speed.py   # → docs/benchmarks/synthetic_speed.{json,md}

``SyntheticShapes`` renders a sample on first access and (by default) caches it; here the cache
is off, so each pass renders every image of the split from its seed. The median of
``--repeats`` passes is reported, with ms per image. A timing, so it lives here and not in the
tests (``tests/test_synthetic.py`` checks what is rendered, not how fast).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from common import OUT, command, machine, median, time_ms, write_results

from fcnseg.data.datasets.synthetic import SyntheticShapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="train")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    ds = SyntheticShapes(split=args.split, cache=False)

    def render_all() -> None:
        for i in range(len(ds)):
            ds.sample(i)

    load_before = os.getloadavg()[0]
    times = time_ms(render_all, repeats=args.repeats, warmup=1)
    height, width = ds.sample(0)[1].shape
    result = {
        "command": command(),
        "machine": machine(),
        "split": args.split,
        "images": len(ds),
        "size": [height, width],
        "repeats": args.repeats,
        "ms_per_pass": times,
        "median_s": median(times) / 1e3,
        "median_ms_per_image": median(times) / len(ds),
        # Other work on the machine slows the passes: the 1-minute load average, as read.
        "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    md = [
        "# Synthetic shapes: rendering speed (no cache)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']['cpu']}; {result['machine']['threads']} threads; "
        f"Python {result['machine']['python']}; 1-minute load average "
        f"{result['load_average_1min'][0]:.2f} before, {result['load_average_1min'][1]:.2f} after",
        "",
        f"Rendering all {len(ds)} {args.split} images ({height}×{width}) from their seeds: "
        f"**{result['median_s']:.2f} s** median of {args.repeats} passes "
        f"({result['median_ms_per_image']:.2f} ms per image; passes "
        + ", ".join(f"{t / 1e3:.2f}" for t in times)
        + " s).",
    ]
    write_results(args.out, "synthetic_speed", result, md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
