"""Evaluation reports: ``metrics.json``, ``metrics.md`` (the printed table) and ``per_image.csv``.

Every report names how each number was computed (protocol, settings, FID backbone and reference set,
resize method) and lists every metric that was skipped with its reason, so no number is ambiguous
and no metric silently disappears.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emca.io import atomic_open, atomic_write_text
from emca.metrics.definitions import COPY_SOURCE_SUFFIX, GROUND_TRUTH_SUFFIX
from emca.metrics.scoring import ScoreResult

REPORT_FILES = ("metrics.json", "metrics.md", "per_image.csv")


def _how(settings: dict[str, Any]) -> str:
    """The 'computed with' cell: the metric's description plus what the run found (FID reference, IS spread)."""
    text = f"{settings.get('type', '')}: {settings.get('description', '')}"
    if "reference_images" in settings:
        cached = ", statistics from cache" if settings.get("statistics_from_cache") else ""
        text += f" ({settings['reference_images']} images{cached})"
    if "resize_to_299" in settings:
        text += f"; resize to 299: {settings['resize_to_299']}"
    if "std" in settings:
        text += f"; std over splits {settings['std']:.4f}"
    return text


def _line(facts: Any) -> str:
    return ", ".join(f"{key} {value}" for key, value in facts.items()) if isinstance(facts, dict) else str(facts)


def markdown_table(result: ScoreResult, context: dict[str, Any]) -> str:
    """The summary as markdown: a header naming data and images, one row per metric, then skipped ones."""
    lines = [
        f"# Evaluation ({context.get('protocol', '?')} protocol)",
        "",
        f"- dataset: {_line(context.get('dataset', {}))}",
        f"- images: {_line(context.get('images', {}))}",
        "",
        "| metric | value | copy the source | ground truth | computed with |",
        "| --- | --- | --- | --- | --- |",
    ]

    def cell(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "-"

    for name, value in result.summary.items():
        if name.endswith((COPY_SOURCE_SUFFIX, GROUND_TRUTH_SUFFIX)):
            continue
        baseline, ceiling = (result.summary.get(name + suffix) for suffix in (COPY_SOURCE_SUFFIX, GROUND_TRUTH_SUFFIX))
        lines.append(
            f"| {name} | {value:.4f} | {cell(baseline)} | {cell(ceiling)} | {_how(result.details.get(name, {}))} |"
        )
    for name in result.skipped:
        lines.append(f"| {name} | skipped | | | see below |")
    if any(name.endswith(COPY_SOURCE_SUFFIX) for name in result.summary):
        lines += [
            "",
            "Copy the source: the same metric with each pair's source image in place of the generated one, the "
            "floor a pose-transfer model has to beat. Ground truth: the real target images in place of the "
            "generated ones, what a perfect model would score (shown where it is not trivially perfect, as it is "
            "for the per-pair metrics: SSIM 1, L1 0).",
        ]
    if context.get("protocol_notes"):
        lines += ["", "What this protocol does to the figures:"]
        lines += [f"- {note}" for note in context["protocol_notes"]]
    if result.skipped:
        lines += ["", "Skipped metrics:"]
        lines += [f"- {name}: {reason}" for name, reason in result.skipped.items()]
    return "\n".join(lines) + "\n"


def write_reports(out_dir: str | Path, result: ScoreResult, context: dict[str, Any]) -> dict[str, Path]:
    """Write the three report files atomically into ``out_dir``; returns their paths by file name."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / name for name in REPORT_FILES}
    document = {
        **context,
        "metrics": result.summary,
        "settings": result.details,
        "skipped": result.skipped,
    }
    atomic_write_text(paths["metrics.json"], json.dumps(document, indent=2, default=str) + "\n")
    atomic_write_text(paths["metrics.md"], markdown_table(result, context))
    with atomic_open(paths["per_image.csv"], "w", encoding="utf-8", newline="") as handle:
        result.per_image.to_csv(handle, index=False)
    return paths
