"""README's "Train on your own data" section, run as a new user would, timed and recorded.

Makes ``my_data/`` from the first 40 Weizmann Horse photos with their masks saved the usual
way (0 = background, 255 = horse), runs the section's commands (all but ``serve``) in a shell
with ``.venv`` activated, and records the wall time of each, the run's val metrics, its curves
and a few prediction panels in ``docs/benchmarks/own-data/``.

    .venv/bin/python benchmarks/own_data.py [--work DIR] [--shared DIR]

``tests/test_own_data.py`` runs the same commands (with ``serve``) through these helpers.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, command, machine, shared_root, write_results

#: Where README's section starts and ends.
SECTION = re.compile(r"<!-- own-data.*?```bash\n(.*?)```\n<!-- /own-data -->", re.S)


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The commands of README's own-data section, one per line, comments dropped."""
    block = SECTION.search(readme.read_text(encoding="utf-8"))
    if block is None:
        raise SystemExit(f"{readme} has no own-data section")
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def horse_folder(dest: Path, shared: Path, count: int = 40) -> Path:
    """``dest/images`` + ``dest/masks``: the first ``count`` Weizmann Horse photos, masks as
    0 / 255 PNGs (the shared copy holds 0 / 1)."""
    horse = shared / "data" / "weizmann-horse"
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    for image in sorted((horse / "images").iterdir())[:count]:
        shutil.copyfile(image, dest / "images" / image.name)
        mask = np.array(Image.open(horse / "masks" / f"{image.stem}.png"))
        binary = Image.fromarray((mask > 0).astype(np.uint8) * 255)
        binary.save(dest / "masks" / f"{image.stem}.png")
    return dest


def run_in_shell(cmd: str, activate: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``cmd`` in bash after ``activate``; (process, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["bash", "-c", f"{activate} && {cmd}"], cwd=cwd, capture_output=True, text=True
    )
    return proc, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--shared", help="shared data folder (default: ../shared)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fcnseg-own-data-"))
    work.mkdir(parents=True, exist_ok=True)
    horse_folder(work / "my_data", shared_root(args.shared))
    (work / ".venv").symlink_to(ROOT / ".venv")
    activate, *commands = readme_commands()
    steps = []
    for cmd in commands:
        if cmd.startswith("fcnseg serve"):
            continue
        proc, seconds = run_in_shell(cmd, activate, work)
        print(f"{seconds:7.1f} s  {cmd}")
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        steps.append({"command": cmd, "seconds": round(seconds, 1), "stdout": proc.stdout})
    run = work / "runs" / "my_data"
    metrics = json.loads((run / "metrics.json").read_text())
    out = OUT / "own-data"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "curves.png", out / "curves.png")
    for name in ("horse001", "horse006", "horse011"):
        shutil.copyfile(work / "predictions" / f"{name}_panel.png", out / f"{name}_panel.png")
    result = {"machine": machine(), "command": command(), "steps": steps, "metrics": metrics}
    iu = metrics["per_class_iu"]
    md = [
        "# Own data, first try: README's commands on 40 horse photos with 0/255 masks",
        "",
        f"`{command()}` — {machine()['cpu']}, {machine()['threads']} threads, "
        f"torch {machine()['torch']}.",
        "",
        "| command | wall time |",
        "|---|---:|",
        *[f"| `{s['command']}` | {s['seconds']:.0f} s |" for s in steps],
        "",
        f"Val (8 images, every 5th by name): mean IU **{metrics['mean_iu']:.3f}**, pixel acc "
        f"{metrics['pixel_acc']:.3f}, mean acc {metrics['mean_acc']:.3f}, fw IU "
        f"{metrics['fw_iu']:.3f}; IoU background {iu['background']:.3f}, foreground (horse) "
        f"{iu['foreground']:.3f}.",
        "",
        "What `fcnseg train my_data` printed before training:",
        "",
        "```",
        *[line for line in steps[1]["stdout"].splitlines() if not line.startswith("[")][:12],
        "```",
        "",
        "![curves](curves.png)",
        "",
        *[f"![{n}]({n}_panel.png)" for n in ("horse001", "horse006", "horse011")],
    ]
    write_results(out, "own_data", result, md)
    (out / "README.md").write_text((out / "own_data.md").read_text())
    (out / "own_data.md").unlink()
    print(f"recorded → {out}")


if __name__ == "__main__":
    main()
