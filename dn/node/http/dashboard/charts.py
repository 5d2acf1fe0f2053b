"""Charts as inline SVG, drawn on the server: a line chart (PoWR scores over epochs, a balance
over heights) and a grouped bar chart (each validator's revealed and clipped score).

Nothing here runs in the browser and no chart library ships: a page carries its charts as
markup, so it renders offline, on a phone, with scripts off. Every label is escaped here, since
model names and causes come from the chain, that is from anyone; the result is safe to insert
into a page as it is. The drawing area is a `viewBox`, so the page's CSS scales it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind friendly (Okabe-Ito), readable on a white or a dark page.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999")
WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44  # margins around the plot area
LEGEND_ROW = 18
MAX_DOTS = 120  # points per series drawn as dots with a tooltip; beyond, only the line
MAX_BAR = 36  # the widest bar, so one validator's two bars do not fill the chart


@dataclass(frozen=True)
class Series:
    """One line: (x, y) points in any order (drawn sorted by x)."""

    name: str
    points: tuple[tuple[float, float], ...]
    dashed: bool = False


@dataclass(frozen=True)
class Bar:
    """One bar of a group; `kind` picks its colour and its legend entry."""

    kind: str
    value: float
    note: str = ""


@dataclass(frozen=True)
class BarGroup:
    """Bars side by side under one label, with an optional horizontal `mark` (a median)."""

    label: str
    bars: tuple[Bar, ...]
    mark: float | None = None


Format = Callable[[float], str]


def plain(value: float) -> str:
    """A tick label: an integer when the value is one, else up to three decimals."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("ticks need finite bounds")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + 1
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value < hi + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with as many decimals as the step between ticks needs, the same for each."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9)) if step else 0
    return [f"{tick:.{decimals}f}" for tick in ticks]


def thin(points: Sequence[tuple[float, float]], keep: int) -> list[tuple[float, float]]:
    """At most about `keep` of `points` (sorted by x): the first, and the last of each of `keep`
    equal stretches of x, so a staircase keeps every level it ends a stretch at."""
    if len(points) <= keep:
        return list(points)
    x_lo, x_hi = points[0][0], points[-1][0]
    span = (x_hi - x_lo) / keep or 1.0
    kept: dict[int, tuple[float, float]] = {}
    for x, y in points:
        kept[int((x - x_lo) / span)] = (x, y)
    return [points[0], *[p for p in kept.values() if p != points[0]]]


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _text(
    x: float, y: float, label: str, *, anchor: str = "middle", size: int = 11, cls: str = ""
) -> str:
    extra = f' class="{cls}"' if cls else ""
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}"{extra}>'
        f"{escape(label)}</text>"
    )


def _frame(
    title: str,
    legend: Sequence[tuple[str, str, bool]],
    width: int,
    height: int,
    left: float = LEFT,
) -> tuple[list[str], int]:
    """The opening of a chart: the svg element, its title and a legend row per few entries.
    Returns the parts and the extra height the legend takes below the plot."""
    rows = (len(legend) + 2) // 3
    extra = rows * LEGEND_ROW
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height + extra}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        _text(left, 16, title, anchor="start", size=13, cls="chart-title"),
    ]
    column = (width - left - RIGHT) / 3
    for i, (name, colour, dashed) in enumerate(legend):
        x = left + (i % 3) * column
        y = height + (i // 3) * LEGEND_ROW + 4
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        parts.append(
            f'<line x1="{_num(x)}" y1="{_num(y)}" x2="{_num(x + 18)}" y2="{_num(y)}" '
            f'stroke="{colour}" stroke-width="3"{dash}/>'
        )
        parts.append(_text(x + 24, y + 4, _clip(name, 28), anchor="start", size=11))
    return parts, extra


def _clip(label: str, n: int) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _left_margin(labels: Sequence[str]) -> float:
    """Room for the longest tick label left of the plot (about 6.5 units a character)."""
    return max(LEFT, 6.5 * max((len(label) for label in labels), default=0) + 14)


def _axes(
    parts: list[str],
    y_ticks: list[float],
    y_of: Callable[[float], float],
    width: int,
    height: int,
    x_label: str,
    y_label: str,
    left: float,
) -> None:
    for tick, label in zip(y_ticks, tick_labels(y_ticks), strict=True):
        y = y_of(tick)
        parts.append(
            f'<line x1="{_num(left)}" y1="{_num(y)}" x2="{width - RIGHT}" y2="{_num(y)}" '
            'stroke="currentColor" stroke-opacity="0.15"/>'
        )
        parts.append(_text(left - 6, y + 4, label, anchor="end", size=10))
    bottom = height - BOTTOM
    parts.append(
        f'<line x1="{_num(left)}" y1="{bottom}" x2="{width - RIGHT}" y2="{bottom}" '
        'stroke="currentColor" stroke-opacity="0.5"/>'
    )
    if x_label:
        parts.append(_text((left + width - RIGHT) / 2, height - 6, x_label, size=11))
    if y_label:
        parts.append(
            f'<text x="12" y="{_num((TOP + bottom) / 2)}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 12 {_num((TOP + bottom) / 2)})">{escape(y_label)}</text>'
        )


def _empty(title: str, message: str, width: int, height: int) -> str:
    parts, _ = _frame(title, (), width, height)
    parts.append(_text(width / 2, height / 2, message, size=13, cls="chart-empty"))
    return "".join(parts) + "</svg>"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    y_range: tuple[float, float] | None = None,
    step: bool = False,
    fmt: Format = plain,
    x_fmt: Format = plain,
    empty: str = "no data yet",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Lines through each series' points (a staircase with `step`, for a balance that holds
    until the next change), a dot with a tooltip at every point, and a legend."""
    drawn = [s for s in series if s.points]
    if not drawn:
        return _empty(title, empty, width, height)
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points]
    lo, hi = y_range if y_range is not None else (min(0.0, min(ys)), max(ys))
    y_ticks = nice_ticks(lo, hi, 6)
    lo, hi = y_ticks[0], y_ticks[-1]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    left = _left_margin(tick_labels(y_ticks))
    plot_w, plot_h = width - left - RIGHT, height - TOP - BOTTOM

    def x_of(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def y_of(y: float) -> float:
        return TOP + (hi - y) / (hi - lo) * plot_h

    legend = [(s.name, PALETTE[i % len(PALETTE)], s.dashed) for i, s in enumerate(drawn)]
    parts, _ = _frame(title, legend, width, height, left)
    _axes(parts, y_ticks, y_of, width, height, x_label, y_label, left)
    whole = all(float(x).is_integer() for x in xs)
    for x in nice_ticks(x_lo, x_hi, 6):
        if x_lo <= x <= x_hi and (not whole or float(x).is_integer()):
            parts.append(_text(x_of(x), height - BOTTOM + 14, x_fmt(x), size=10))
    for i, s in enumerate(drawn):
        colour = PALETTE[i % len(PALETTE)]
        points = sorted(s.points)
        path: list[tuple[float, float]] = []
        for n, (x, y) in enumerate(points):
            if step and n:
                path.append((x_of(x), y_of(points[n - 1][1])))
            path.append((x_of(x), y_of(y)))
        if step:
            path.append((x_of(x_hi), y_of(points[-1][1])))
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        coords = " ".join(f"{_num(px)},{_num(py)}" for px, py in path)
        parts.append(
            f'<polyline class="series" data-series="{escape(s.name)}" points="{coords}" '
            f'fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        for x, y in points if len(points) <= MAX_DOTS else ():
            tip = f"{s.name}: {fmt(y)} at {x_fmt(x)}"
            parts.append(
                f'<circle cx="{_num(x_of(x))}" cy="{_num(y_of(y))}" r="3" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    return "".join(parts) + "</svg>"


def bar_chart(
    groups: Sequence[BarGroup],
    *,
    title: str,
    y_label: str = "",
    y_range: tuple[float, float] | None = None,
    fmt: Format = plain,
    mark_name: str = "",
    empty: str = "no data yet",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Groups of bars side by side, each group labelled under the axis; a bar's tooltip says
    its kind, value and note; a group's `mark` is a dashed line across it (`mark_name` in the
    legend)."""
    if not any(g.bars for g in groups):
        return _empty(title, empty, width, height)
    values = [b.value for g in groups for b in g.bars]
    values += [g.mark for g in groups if g.mark is not None]
    lo, hi = y_range if y_range is not None else (min(0.0, min(values)), max(values))
    y_ticks = nice_ticks(lo, hi, 6)
    lo, hi = y_ticks[0], y_ticks[-1]
    kinds: list[str] = []
    for g in groups:
        for b in g.bars:
            if b.kind not in kinds:
                kinds.append(b.kind)
    colours = {kind: PALETTE[i % len(PALETTE)] for i, kind in enumerate(kinds)}
    legend = [(kind, colours[kind], False) for kind in kinds]
    if mark_name and any(g.mark is not None for g in groups):
        legend.append((mark_name, "currentColor", True))
    left = _left_margin(tick_labels(y_ticks))
    plot_w, plot_h = width - left - RIGHT, height - TOP - BOTTOM

    def y_of(y: float) -> float:
        return TOP + (hi - y) / (hi - lo) * plot_h

    parts, _ = _frame(title, legend, width, height, left)
    _axes(parts, y_ticks, y_of, width, height, "", y_label, left)
    slot = plot_w / len(groups)
    base = y_of(max(lo, 0.0))
    for n, group in enumerate(groups):
        start_x = left + n * slot
        bar_w = min(slot * 0.8 / max(len(group.bars), 1), MAX_BAR)
        start = start_x + (slot - bar_w * len(group.bars)) / 2
        for i, bar in enumerate(group.bars):
            x = start + i * bar_w
            top = y_of(bar.value)
            tip = f"{group.label} · {bar.kind}: {fmt(bar.value)}"
            if bar.note:
                tip += f" ({bar.note})"
            parts.append(
                f'<rect class="bar" x="{_num(x + 1)}" y="{_num(min(top, base))}" '
                f'width="{_num(max(bar_w - 2, 1))}" height="{_num(max(abs(base - top), 1))}" '
                f'fill="{colours[bar.kind]}"><title>{escape(tip)}</title></rect>'
            )
        if group.mark is not None:
            y = y_of(group.mark)
            reach = bar_w * len(group.bars) / 2 + 8
            parts.append(
                f'<line x1="{_num(start_x + slot / 2 - reach)}" y1="{_num(y)}" '
                f'x2="{_num(start_x + slot / 2 + reach)}" y2="{_num(y)}" stroke="currentColor" '
                f'stroke-width="2" stroke-dasharray="5 3"><title>'
                f"{escape(f'{group.label} · {mark_name}: {fmt(group.mark)}')}</title></line>"
            )
        label = _clip(group.label, max(int(slot / 7), 4))
        parts.append(_text(start_x + slot / 2, height - BOTTOM + 14, label, size=10))
    return "".join(parts) + "</svg>"
