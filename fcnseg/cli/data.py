"""``fcnseg inspect`` and the data-folder mode of ``fcnseg train``: what the data holds, which
config it gets, and what is wrong with its labels — printed before anything trains."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeAlias

    from fcnseg.config import Config
    from fcnseg.data.survey import FolderSurvey

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["add_inspect_parser", "resolve_run_config", "save_config"]


def _sizes(sizes: dict[tuple[int, int], int]) -> str:
    from fcnseg.data.survey import median_size

    (common, n), *_ = sorted(sizes.items(), key=lambda kv: -kv[1])
    if len(sizes) == 1:
        return f"all {common[0]}×{common[1]}"
    hs = [s[0] for s in sizes]
    ws = [s[1] for s in sizes]
    h, w = median_size(sizes)
    typical = f"median {h:g}×{w:g}"
    if n > 1:
        typical += f", most common {common[0]}×{common[1]} ({n})"
    return f"{len(sizes)} sizes, {min(hs)}–{max(hs)} × {min(ws)}–{max(ws)} (H×W); {typical}"


def _folder_lines(survey: FolderSurvey, raw: dict[str, Any]) -> list[str]:
    d = raw["data"]
    if "all" in survey.splits:
        from fcnseg.data.datasets.folder import holdout_counts

        holdout = d["options"]["holdout"]
        train, val = holdout_counts(len(survey.splits["all"]), holdout)
        split = f"every {holdout}th pair (by name) is val → {train} train, {val} val"
    else:
        split = ", ".join(f"{s}/ {len(v)}" for s, v in survey.splits.items()) + " (split folders)"
    values = ", ".join(f"{v} ({px:,} px)" for v, px in survey.values.items())
    mapped = (
        survey.mask_values is not None and survey.ignore_index not in survey.mask_values.values()
    )
    ignore = f"{survey.ignore_index}" + (" (no raw value maps to it)" if mapped else "")
    lines = [
        f"data folder {survey.root}",
        f"  pairs:       {survey.pairs} image/mask pairs (matched by file name)",
        f"  split:       {split}",
        f"  image sizes: {_sizes(survey.sizes)}; training at {d['resize'][0]}×{d['resize'][1]}",
        f"  masks:       {survey.mask_kind}, values {values}",
        f"  classes:     {len(survey.classes)} — {survey.mapping}",
        f"  names:       {', '.join(f'{i} {c}' for i, c in enumerate(survey.classes))}",
        f"  ignore:      {ignore}",
    ]
    lines += [f"  note:        {note}" for note in survey.notes]
    return lines


def _recipe_lines(cfg: Config) -> list[str]:
    t, m = cfg.train, cfg.model
    weights = m.arguments.get("backbone_weights")
    init = (
        "random initialisation (for ImageNet weights: --set model.backbone_weights=imagenet, "
        "or a weights file)"
        if weights is None
        else f"weights {weights}"
    )
    backbone = m.arguments.get("backbone")
    return [
        f"model:    {m.name}{f' {backbone}' if backbone else ''}, {init}",
        f"training: {t.iterations} iterations, batch {cfg.data.batch_size}, {t.optimizer} "
        f"lr {t.lr:g}, {t.schedule} schedule; evaluation every {t.eval_every}",
    ]


def _label_lines(cfg: Config, *, max_masks: int, progress: bool) -> list[str]:
    """Class frequencies and label problems of the training and validation splits."""
    from fcnseg.data.label_check import label_problems, label_stats
    from fcnseg.engine.build import build_split

    lines: list[str] = []
    for split in dict.fromkeys((cfg.data.train_split, cfg.data.val_split)):
        dataset = build_split(cfg, split)
        stats = label_stats(dataset, max_masks=max_masks, progress=progress)
        of = "" if stats.masks == stats.total else f", counted in {stats.masks}"
        lines.append(f"{split} split: {stats.total} samples{of}")
        freq = stats.frequencies()
        for i, name in enumerate(stats.classes):
            lines.append(
                f"  {i:>3} {name:<20} {freq[i]:7.2%} of labelled pixels, in "
                f"{stats.images_with[i]} of {stats.masks} masks"
            )
        total = stats.labelled + stats.ignored
        if stats.ignore_index is not None:
            share = stats.ignored / total if total else 0.0
            lines.append(f"  ignore ({stats.ignore_index}): {share:.2%} of pixels")
        for problem in label_problems(stats, split):
            lines.append(f"  {problem.level.upper()}: {problem.message}")
    return lines


def resolve_run_config(
    source: str, overrides: list[str], *, progress: bool = True
) -> tuple[Config, list[str]]:
    """The config of ``fcnseg train SOURCE`` — a config file/shipped name, or a data folder
    (surveyed; the recipe of :mod:`fcnseg.config.own_data`) — and the report lines to print."""
    from fcnseg.config import config_from_data, load_config

    if not Path(source).is_dir():
        return load_config(source, overrides), []
    from fcnseg.config.own_data import folder_config
    from fcnseg.data.survey import survey_folder

    survey = survey_folder(source, progress=progress)
    raw = folder_config(survey)
    cfg = config_from_data(raw, overrides, f"the config inferred for {source}")
    return cfg, [*_folder_lines(survey, raw), *_recipe_lines(cfg)]


def save_config(cfg: Config, path: str | Path, source: str) -> None:
    """Write ``cfg`` as an editable YAML file (with a header saying where it came from)."""
    import yaml

    header = (
        f"# fcnseg config for {source} (written by --save-config).\n"
        f"# Edit it, then: fcnseg train {path}\n"
    )
    Path(path).write_text(header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _inspect(args: argparse.Namespace) -> int:
    cfg, lines = resolve_run_config(args.source, args.set, progress=not args.no_progress)
    if not lines:
        lines = [f"config {args.source}: dataset {cfg.data.dataset}, root {cfg.data.root}"]
    lines += _label_lines(cfg, max_masks=args.max_masks, progress=not args.no_progress)
    print("\n".join(lines))
    if args.save_config:
        save_config(cfg, args.save_config, args.source)
        print(f"wrote {args.save_config}")
    return 0


def add_inspect_parser(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "inspect",
        help="what a data folder or config's data holds: pairs, sizes, mask values → classes, "
        "class frequencies, label problems (trains nothing)",
    )
    p.add_argument("source", help="data folder (images/ + masks/) or config file / shipped name")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    p.add_argument("--save-config", metavar="FILE", help="also write the config as YAML")
    p.add_argument(
        "--max-masks", type=int, default=1000, help="masks counted per split, evenly spaced (1000)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_inspect)
