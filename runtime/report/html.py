"""A self-contained HTML report per radiograph, and an index page for a folder of them.

Everything is in the one file: the radiograph (PNG, full resolution) and each heatmap (a
colour layer with its own transparency, WebP) as data URIs in the style sheet, and a small
script for zoom/pan, the opacity slider and the method toggle. A Content-Security-Policy
forbids every network request. The heatmap layers share the radiograph's box, so they stay
on the anatomy at every zoom. Controls are buttons, radio buttons and a range input, all
reachable by keyboard; the layout reflows from a 7-inch screen to 1080p.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..maps.colour import colour_layer, lut
from ..maps.sheet import fit

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
MAX_LAYER_SIDE = 1024  # heatmap layers are smooth at this size; the radiograph keeps its own
LAYER_QUALITY = 90  # WebP: a third of the PNG's size for LRP's fine-grained maps


def asset(name: str) -> str:
    """A file of assets/ (the page's style sheet and scripts), inlined into every page."""
    return files(__package__).joinpath("assets", name).read_text()


METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "layercam": "LayerCAM",
                "guided-gradcam": "Guided Grad-CAM"}


@dataclass
class MethodMap:
    """One method's map for one class, on the radiograph's pixel grid."""

    method: str  # gradcam, ..., lrp:epsilon
    heat: np.ndarray
    signed: bool


@dataclass
class ExplainedFinding:
    name: str
    probability: float
    maps: list[MethodMap] = field(default_factory=list)


def method_title(method: str) -> str:
    if method.startswith("lrp:"):
        return f"LRP ({method[4:]})"
    return METHOD_NAMES.get(method, method)


def data_uri(image: np.ndarray, webp_quality: int | None = None) -> str:
    """PNG (lossless), or WebP at ``webp_quality`` (its alpha channel stays lossless)."""
    kind, params = ("webp", [cv2.IMWRITE_WEBP_QUALITY, webp_quality]) if webp_quality else ("png", [])
    ok, encoded = cv2.imencode(f".{kind}", image, params)
    if not ok:
        raise RuntimeError(f"{kind.upper()} encoding failed")
    return f"data:image/{kind};base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _layer(heat: np.ndarray, signed: bool) -> np.ndarray:
    return fit(colour_layer(heat, signed), MAX_LAYER_SIDE)


def legend_gradient(signed: bool) -> str:
    """A CSS linear-gradient of the map's colours (left: lowest)."""
    colours = lut(signed)
    stops = [colours[i] for i in np.linspace(0, 255, 9).round().astype(int)]
    return "linear-gradient(to right, " + ", ".join(f"rgb({c[2]},{c[1]},{c[0]})" for c in stops) + ")"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _bars(probabilities: Mapping[str, float], thresholds: Mapping[str, float]) -> str:
    rows = []
    for name in sorted(probabilities, key=lambda c: -probabilities[c]):
        p, t = probabilities[name], thresholds[name]
        positive = p >= t
        rows.append(
            f'<li class="bar{" positive" if positive else ""}" data-class="{_e(name)}" data-probability="{p:.6f}">'
            f'<span class="label">{_e(name)}</span>'
            f'<span class="track" role="img" aria-label="{_e(name)}: probability {p:.2f}, threshold {t:.2f}'
            f'{", above threshold" if positive else ""}">'
            f'<span class="fill" style="width:{p * 100:.1f}%"></span>'
            f'<span class="threshold" style="left:{t * 100:.1f}%" title="threshold {t:.2f}"></span></span>'
            f'<span class="value">{p:.2f}{" &#9650;" if positive else ""}</span></li>'
        )
    return '<ol class="bars" aria-label="Findings, most probable first">' + "".join(rows) + "</ol>"


def _viewer(layers: Sequence[str], label: str, group: str, aspect: float) -> str:
    """A zoomable box: the radiograph and the given heat layers (CSS classes), stacked."""
    stacked = "".join(f'<div class="layer heat {cls}"></div>' for cls in layers)
    return (f'<div class="viewer" tabindex="0" role="group" aria-label="{_e(label)}: drag or arrow keys to pan, '
            f'wheel or + and - to zoom, 0 to reset" data-group="{group}" style="--aspect:{aspect:.6f}">'
            f'<div class="stage"><div class="layer radiograph"></div>{stacked}</div>'
            f'<div class="zoom"><button type="button" data-zoom="in" aria-label="Zoom in">+</button>'
            f'<button type="button" data-zoom="out" aria-label="Zoom out">&minus;</button>'
            f'<button type="button" data-zoom="reset" aria-label="Reset zoom">1:1</button></div></div>')


def _legend(signed: bool) -> str:
    ends = ("against (&minus;)", "0", "for (+)") if signed else ("0", "", "strongest")
    what = "signed relevance" if signed else "weight (non-negative)"
    return (f'<div class="legend" aria-label="Colour legend: {what}"><span class="ramp" '
            f'style="background:{legend_gradient(signed)}"></span>'
            f'<span class="ends"><span>{ends[0]}</span><span>{ends[1]}</span><span>{ends[2]}</span></span>'
            f'<span class="what">{what}</span></div>')


def _finding(index: int, finding: ExplainedFinding, threshold: float, aspect: float) -> str:
    figures, radios = [], []
    for m, item in enumerate(finding.maps):
        cls = f"heat-{index}-{m}"
        title = method_title(item.method)
        figures.append(f'<figure data-method="{_e(item.method)}">'
                       f'<figcaption>{_e(title)}</figcaption>{_viewer([cls], f"{finding.name}, {title}", f"g{index}", aspect)}'
                       f'{_legend(item.signed)}</figure>')
        radios.append(f'<label><input type="radio" name="show-{index}" value="{m}"{" checked" if m == 0 else ""}> '
                      f'{_e(title)}</label>')
    positive = finding.probability >= threshold
    toggle = ""
    if len(finding.maps) > 1:
        toggle = (f'<button type="button" class="layout" aria-pressed="false">One view, toggle methods</button>'
                  f'<fieldset class="methods"><legend>Method shown</legend>{"".join(radios)}</fieldset>')
    return (f'<article class="finding" id="finding-{index}" style="--opacity:0.6">'
            f'<h3>{_e(finding.name)} <span class="p">p = {finding.probability:.2f}</span> '
            f'<span class="t">threshold {threshold:.2f}</span>{" <strong>above threshold</strong>" if positive else ""}</h3>'
            f'<div class="controls"><label>Heatmap opacity <input type="range" class="opacity" min="0" max="100" '
            f'value="60" aria-label="Heatmap opacity for {_e(finding.name)}"></label>{toggle}</div>'
            f'<div class="figures">{"".join(figures)}</div></article>')


def _details(title: str, rows: Mapping[str, Any]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows.items() if v not in (None, "", [], {}))
    return f"<section class=\"details\"><h3>{_e(title)}</h3><dl>{items}</dl></section>"


def render_report(*, title: str, radiograph: np.ndarray, probabilities: Mapping[str, float],
                  thresholds: Mapping[str, float], explained: Sequence[ExplainedFinding], banner: str,
                  model: Mapping[str, Any], backend: str, settings: Mapping[str, Any], timing_ms: Mapping[str, float],
                  identity: Mapping[str, Any]) -> str:
    """The report's HTML. ``radiograph``: gray [0, 1] (bright = dense) at full resolution; each
    map on the same grid."""
    gray = (np.clip(radiograph, 0, 1) * 255).round().astype(np.uint8)
    aspect = gray.shape[1] / gray.shape[0]
    styles = [f".radiograph{{background-image:url({data_uri(gray)})}}"]
    for index, finding in enumerate(explained):
        for m, item in enumerate(finding.maps):
            if item.heat.shape != gray.shape:
                raise ValueError(f"{finding.name} {item.method}: map {item.heat.shape} is not on the radiograph's "
                                 f"grid {gray.shape}")
            styles.append(f".heat-{index}-{m}{{background-image:url({data_uri(_layer(item.heat, item.signed), LAYER_QUALITY)})}}")
    findings = "".join(_finding(i, f, thresholds[f.name], aspect) for i, f in enumerate(explained))
    model_rows = {"name": model.get("name"), "status": model.get("status"), "architecture": model.get("architecture"),
                  "weights": model.get("weights", {}).get("source"), "weights sha256": model.get("weights", {}).get("sha256"),
                  "training data": model.get("weights", {}).get("training_data"), "backend": backend}
    timing = {k: f"{v:.1f} ms" for k, v in timing_ms.items()}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{_e(title)} &ndash; chexplain</title>
<style>{asset('report.css')}
{chr(10).join(styles)}</style></head>
<body>
<header><h1>{_e(title)}</h1><p class="warning" role="note">{_e(banner)}</p></header>
<main>
<section class="top">
<section aria-labelledby="h-radiograph"><h2 id="h-radiograph">Radiograph</h2>{_viewer([], "Radiograph", "r", aspect)}</section>
<section aria-labelledby="h-findings"><h2 id="h-findings">Findings</h2>
<p class="hint">Bars: probability; tick: the class's threshold; highlighted: at or above it.</p>
{_bars(probabilities, thresholds)}</section>
</section>
<section aria-labelledby="h-explained"><h2 id="h-explained">Where the model looks</h2>
<p class="hint">Grad-CAM: where the evidence for the class lies, coarse (non-negative). LRP: each pixel's signed
contribution to the class's score (red for, blue against). Both are drawn over the same radiograph.</p>
{findings or "<p>No class was explained.</p>"}</section>
<section aria-labelledby="h-details" class="about"><h2 id="h-details">Model and input</h2>
{_details("Model", model_rows)}{_details("Methods", settings)}{_details("Input", identity)}{_details("Timings", timing)}
</section>
</main>
<script>{asset('report.js')}</script>
</body></html>
"""
    return page


def render_index(entries: Sequence[Mapping[str, Any]], classes: Sequence[str], banner: str) -> str:
    """A table of reports (``entries``: report, input, probabilities, findings), sortable by
    any column; links are relative to the index."""
    head = "".join(f'<th scope="col" aria-sort="none"><button type="button" data-key="{i + 2}">{_e(c)}</button></th>'
                   for i, c in enumerate(classes))
    rows = []
    for entry in entries:
        cells = "".join(f'<td data-value="{entry["probabilities"][c]:.6f}"'
                        f'{" class=positive" if c in entry["findings"] else ""}>{entry["probabilities"][c]:.2f}</td>'
                        for c in classes)
        top = max(entry["probabilities"].values())
        rows.append(f'<tr><td data-value="{_e(entry["input"])}"><a href="{_e(entry["report"])}">{_e(entry["input"])}</a></td>'
                    f'<td data-value="{top:.6f}">{_e(", ".join(entry["findings"]) or "none")}</td>{cells}</tr>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>chexplain reports</title><style>{asset('report.css')}</style></head>
<body><header><h1>Reports</h1><p class="warning" role="note">{_e(banner)}</p></header>
<main><p class="hint">Sort by any column with its button (again to reverse). Highlighted: at or above the class's threshold.</p>
<div class="scroll"><table class="index"><thead><tr>
<th scope="col" aria-sort="none"><button type="button" data-key="0">Radiograph</button></th>
<th scope="col" aria-sort="none"><button type="button" data-key="1">Findings</button></th>{head}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div></main>
<script>{asset('index.js')}</script></body></html>
"""


def write_report(path: Path, html_text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_text, encoding="utf-8")
    return path


def index_entry(report: Path, root: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    return {"report": report.relative_to(root).as_posix(), "input": Path(record["input"]).name,
            "probabilities": record["probabilities"], "findings": record["findings"]}
