"""Simulated against measured CDFs of per-request TTFT, TPOT and E2E, as files.

`cdf.html` and `cdf.vl.json` are an Altair (Vega-Lite) chart, written when Altair (the `ui`
extra) is installed; `cdf.png` is drawn with Pillow (installed with Streamlit, also the `ui`
extra), since Altair's PNG export needs vl-convert, which servesim does not depend on. Without
either library the plot is skipped and `per_request.csv` still holds the data.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sim.validation import PER_REQUEST_METRICS

SIDES = (("real", "measured", (31, 119, 180)), ("sim", "simulated", (214, 39, 40)))
"""(column prefix, legend label, RGB line colour)."""


def cdf_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-form points {metric, source, value_s, cdf}: the empirical CDF of each metric on
    each side, pooled over repeats."""
    points = []
    for metric in PER_REQUEST_METRICS:
        for prefix, label, _ in SIDES:
            values = sorted(float(r[f"{prefix}_{metric}"]) for r in rows
                            if r.get(f"{prefix}_{metric}") not in (None, ""))
            points.extend({"metric": metric, "source": label, "value_s": v,
                           "cdf": (i + 1) / len(values)} for i, v in enumerate(values))
    return points


def write_cdf_plots(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write whichever of cdf.html / cdf.vl.json / cdf.png the installed libraries allow."""
    out = Path(out_dir)
    points = cdf_points(rows)
    written: list[Path] = []
    if points and importlib.util.find_spec("altair") is not None:
        written += _write_altair(points, out)
    if points and importlib.util.find_spec("PIL") is not None:
        written.append(_write_png(points, out / "cdf.png"))
    return written


def _write_altair(points: list[dict[str, Any]], out: Path) -> list[Path]:
    import altair as alt

    chart = alt.Chart(alt.Data(values=points)).mark_line(interpolate="step-after").encode(
        x=alt.X("value_s:Q", title="seconds"),
        y=alt.Y("cdf:Q", title="share of requests"),
        color=alt.Color("source:N", title=None),
    ).properties(width=260, height=200).facet(
        column=alt.Column("metric:N", title=None, sort=list(PER_REQUEST_METRICS)),
    ).resolve_scale(x="independent").properties(
        title="per-request latency: simulated vs measured")
    html, spec = out / "cdf.html", out / "cdf.vl.json"
    chart.save(str(html))
    spec.write_text(chart.to_json() + "\n")
    return [html, spec]


PANEL_W, PANEL_H, MARGIN = 320, 240, 40


def _write_png(points: list[dict[str, Any]], path: Path) -> Path:
    """One panel per metric: both CDFs as step lines, x from 0 to the largest value."""
    from PIL import Image, ImageDraw

    width = len(PER_REQUEST_METRICS) * (PANEL_W + MARGIN) + MARGIN
    image = Image.new("RGB", (width, PANEL_H + 2 * MARGIN + 20), "white")
    draw = ImageDraw.Draw(image)
    for panel, metric in enumerate(PER_REQUEST_METRICS):
        left, top = MARGIN + panel * (PANEL_W + MARGIN), MARGIN
        bottom, right = top + PANEL_H, left + PANEL_W
        mine = [p for p in points if p["metric"] == metric]
        x_max = max((p["value_s"] for p in mine), default=1.0) or 1.0
        draw.rectangle((left, top, right, bottom), outline="black")
        draw.text((left, top - 16), f"{metric} CDF (x: 0 to {x_max:.3g} s)", fill="black")
        for _, label, colour in SIDES:
            line = [(left, bottom)]
            for p in (q for q in mine if q["source"] == label):
                x = left + PANEL_W * p["value_s"] / x_max
                y = bottom - PANEL_H * p["cdf"]
                line += [(x, line[-1][1]), (x, y)]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
    for index, (_, label, colour) in enumerate(SIDES):
        x = MARGIN + index * 120
        draw.line((x, PANEL_H + MARGIN + 22, x + 20, PANEL_H + MARGIN + 22), fill=colour,
                  width=3)
        draw.text((x + 26, PANEL_H + MARGIN + 16), label, fill="black")
    image.save(path)
    return path
