"""The dashboard's SVG charts (dn/node/http/dashboard/charts.py): well-formed SVG that puts each
value where it belongs, draws every point and bar, and escapes every label (names on the chain
are anyone's)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from dn.node.http.dashboard.charts import (
    BOTTOM,
    HEIGHT,
    Bar,
    BarGroup,
    Series,
    bar_chart,
    line_chart,
    nice_ticks,
    thin,
)

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>&'


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize(
    ("lo", "hi", "count"), [(0, 1, 6), (0, 0.37, 5), (-3, 12, 5), (5, 5, 5), (0, 1234567, 6)]
)
def test_ticks_are_round_and_cover_the_range(lo: float, hi: float, count: int) -> None:
    ticks = nice_ticks(lo, hi, count)
    assert ticks[0] <= lo and ticks[-1] >= hi
    steps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert max(steps) - min(steps) < 1e-9 * max(steps)
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert round(mantissa, 6) in (1, 2, 5)
    assert 2 <= len(ticks) <= count + 2


def test_a_line_chart_draws_each_point_higher_for_a_higher_value() -> None:
    svg = line_chart(
        [Series("smollm2", ((0, 0.2), (1, 0.5), (2, 0.9))), Series("gemma", ((1, 0.4),))],
        title="PoWR score by epoch",
        y_range=(0.0, 1.0),
    )
    root = parse(svg)
    lines = list(root.iter(f"{SVG}polyline"))
    assert [line.get("data-series") for line in lines] == ["smollm2", "gemma"]
    dots = list(root.iter(f"{SVG}circle"))
    assert len(dots) == 4
    ys = [float(d.get("cy", "0")) for d in dots[:3]]
    assert ys[0] > ys[1] > ys[2]  # SVG's y grows downwards
    xs = [float(d.get("cx", "0")) for d in dots[:3]]
    assert xs[0] < xs[1] < xs[2]
    assert all(0 <= y <= HEIGHT for y in ys)
    tips = ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]
    assert "smollm2: 0.9 at 2" in tips
    assert "PoWR score by epoch" in texts(root)


def test_epochs_get_whole_ticks() -> None:
    svg = line_chart([Series("m", ((0, 0.1), (1, 0.2)))], title="t", y_range=(0.0, 1.0))
    under_the_axis = f"{HEIGHT - BOTTOM + 14:.0f}"
    x_labels = [
        "".join(t.itertext()) for t in parse(svg).iter(f"{SVG}text") if t.get("y") == under_the_axis
    ]
    assert x_labels == ["0", "1"]


def test_a_step_chart_holds_each_value_until_the_next() -> None:
    svg = line_chart([Series("balance", ((0, 10), (5, 20), (9, 30)))], title="b", step=True)
    line = next(parse(svg).iter(f"{SVG}polyline"))
    points = [tuple(map(float, p.split(","))) for p in line.get("points", "").split()]
    # (0,10) (5,10) (5,20) (9,20) (9,30) (9,30): horizontal, then vertical, at each change
    assert len(points) == 6
    assert points[0][1] == points[1][1] and points[1][0] == points[2][0]
    assert points[2][1] == points[3][1] and points[3][0] == points[4][0]


def test_labels_are_escaped() -> None:
    svg = line_chart([Series(HOSTILE, ((0, 1), (1, 2)))], title=HOSTILE)
    assert "<script>" not in svg
    root = parse(svg)  # still well-formed
    assert HOSTILE in texts(root)
    bars = bar_chart(
        [BarGroup(HOSTILE, (Bar(HOSTILE, 0.5, note=HOSTILE),), mark=0.4)],
        title=HOSTILE,
        mark_name=HOSTILE,
    )
    assert "<script>" not in bars
    assert HOSTILE in texts(parse(bars))


def test_empty_charts_say_so() -> None:
    assert "no epoch yet" in texts(parse(line_chart([], title="t", empty="no epoch yet")))
    assert "nothing" in texts(parse(line_chart([Series("a", ())], title="t", empty="nothing")))
    assert "none" in texts(parse(bar_chart([BarGroup("m", ())], title="t", empty="none")))


def test_a_bar_chart_draws_every_bar_to_its_value_and_marks_the_median() -> None:
    groups = [
        BarGroup(
            "smollm2",
            (Bar("revealed", 0.9, "v1"), Bar("clipped", 0.8, "v1"), Bar("revealed", 0.7, "v2")),
            mark=0.7,
        ),
        BarGroup("gemma", (Bar("revealed", 0.4, "v1"),), mark=None),
    ]
    root = parse(bar_chart(groups, title="epoch 3", y_range=(0.0, 1.0), mark_name="median"))
    rects = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(rects) == 4
    heights = [float(r.get("height", "0")) for r in rects]
    assert heights[0] > heights[1] > heights[2] > heights[3] > 0
    fills = [r.get("fill") for r in rects]
    assert fills[0] == fills[2] != fills[1]  # one colour per kind
    tips = ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]
    assert "smollm2 · clipped: 0.8 (v1)" in tips
    assert "smollm2 · median: 0.7" in tips
    assert {"revealed", "clipped", "median", "smollm2", "gemma"} <= set(texts(root))


def test_thinning_keeps_both_ends_and_about_as_many_points_as_asked() -> None:
    points = [(float(x), float(x % 7)) for x in range(10_000)]
    thinned = thin(points, 100)
    assert thinned[0] == points[0] and thinned[-1] == points[-1]
    assert 90 <= len(thinned) <= 102
    assert thinned == sorted(thinned)
    assert thin(points[:50], 100) == points[:50]


def test_a_long_series_is_a_line_without_dots() -> None:
    root = parse(
        line_chart([Series("b", tuple((float(x), 1.0 * x) for x in range(500)))], title="t")
    )
    assert not list(root.iter(f"{SVG}circle"))
    assert len(next(root.iter(f"{SVG}polyline")).get("points", "").split()) == 500
