"""Small inline SVG bar charts for the admin, drawn on the server.

No JavaScript and no CDN: the admin works offline and behind strict content policies. One
panel per series, each on its own scale, so clicks are not flattened by bids. Every value
and label is escaped here; the result is safe to mark as HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape

PANEL_WIDTH = 180
PANEL_HEIGHT = 120
GAP = 16
TOP = 34  # room for the title and the total
BOTTOM = 18  # room for the first and last labels
COLORS = ("#417690", "#79aec8", "#5b8c5a", "#c77c2e", "#9b4d96")


@dataclass(frozen=True)
class Series:
    title: str
    values: Sequence[int | Decimal]
    total: str  # the figure shown under the title, already formatted


def _number(value: int | Decimal) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _panel(series: Series, labels: Sequence[str], left: int, color: str) -> list[str]:
    parts = [
        f'<text x="{left}" y="12" font-size="12" font-weight="bold">{escape(series.title)}'
        "</text>",
        f'<text x="{left}" y="27" font-size="12">{escape(series.total)}</text>',
    ]
    base = PANEL_HEIGHT - BOTTOM
    plot_height = base - TOP
    largest = max((float(value) for value in series.values), default=0.0)
    slot = PANEL_WIDTH / max(len(series.values), 1)
    for index, value in enumerate(series.values):
        height = round(plot_height * float(value) / largest, 1) if largest > 0 else 0.0
        x = round(left + index * slot + slot * 0.1, 1)
        tooltip = escape(f"{labels[index]}: {_number(value)}")
        parts.append(
            f'<rect x="{x}" y="{round(base - height, 1)}" width="{round(slot * 0.8, 1)}" '
            f'height="{height}" fill="{color}"><title>{tooltip}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + PANEL_WIDTH}" y2="{base}" '
                 'stroke="#999" stroke-width="1"/>')
    if labels:
        parts.append(f'<text x="{left}" y="{PANEL_HEIGHT - 4}" font-size="10" fill="#666">'
                     f"{escape(labels[0])}</text>")
        parts.append(f'<text x="{left + PANEL_WIDTH}" y="{PANEL_HEIGHT - 4}" font-size="10" '
                     f'fill="#666" text-anchor="end">{escape(labels[-1])}</text>')
    return parts


def bar_charts_svg(*, title: str, labels: Sequence[str], series: Sequence[Series]) -> str:
    """One `<svg>` with a bar panel per series; `labels` name the buckets (x axis)."""
    width = len(series) * (PANEL_WIDTH + GAP) - GAP
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="analytics-chart" '
             f'width="{width}" height="{PANEL_HEIGHT}" viewBox="0 0 {width} {PANEL_HEIGHT}" '
             f'role="img" aria-label="{escape(title)}" font-family="sans-serif">',
             f"<title>{escape(title)}</title>"]
    for index, one in enumerate(series):
        parts.extend(_panel(one, labels, index * (PANEL_WIDTH + GAP),
                            COLORS[index % len(COLORS)]))
    parts.append("</svg>")
    return "".join(parts)
