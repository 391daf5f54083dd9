"""Charts as inline SVG, drawn on the server: no script, no CDN, readable without JavaScript."""

from __future__ import annotations

import itertools
import math
from html import escape

from markupsafe import Markup

from ..listing import TimeRange

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 36
# Colour-blind-safe (Okabe-Ito), dark enough on white for the lines' 3:1 contrast.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#56b4e9")
_ids = itertools.count(1)


def nice_max(value: int) -> int:
    """The top of the y axis: 1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 4:
        return 4
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _time_label(window: TimeRange, index: int) -> str:
    moment = window.start + window.bucket * index
    return moment.strftime("%a %H:%M" if window.name == "7d" else "%H:%M")


def line_chart(series: dict[str, list[int]], window: TimeRange, title: str, unit: str) -> Markup:
    """One line per series over the window's buckets, with axes, the unit and a legend."""
    chart_id = f"chart-{next(_ids)}"
    buckets = window.buckets
    top = nice_max(max((max(values) for values in series.values() if values), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: float) -> float:
        return LEFT + plot_w * index / max(1, buckets - 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    totals = ", ".join(f"{name}: {sum(values)}" for name, values in sorted(series.items())) or "no data"
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(unit)} per {_bucket_words(window)}, last {window.name}. '
        f"Totals: {escape(totals)}.</desc>",
    ]
    for tick in range(5):  # y axis: 0, ¼, ½, ¾ and the top
        value = top * tick / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    for tick in range(5):  # x axis: five times across the window; the outer two kept inside it
        index = round((buckets - 1) * tick / 4)
        anchor = "start" if tick == 0 else "end" if tick == 4 else "middle"
        parts.append(
            f'<text class="tick" x="{x(index):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="{anchor}">'
            f"{_time_label(window, index)}</text>"
        )
    parts.append(
        f'<text class="unit" x="{LEFT}" y="{HEIGHT - 4}">{escape(unit)} per {_bucket_words(window)} (UTC)</text>'
    )
    legend_x = WIDTH - RIGHT
    for colour, (name, values) in zip(itertools.cycle(PALETTE), sorted(series.items()), strict=False):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        label = f"{name} ({sum(values)})"
        legend_x -= 12 + 7 * len(label)
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{legend_x + 14}" y="{HEIGHT - 5}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    # Every text put in above went through html.escape; the rest are numbers and our constants.
    return Markup("".join(parts))  # nosec B704


def _bucket_words(window: TimeRange) -> str:
    minutes = int(window.bucket.total_seconds() // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h"
