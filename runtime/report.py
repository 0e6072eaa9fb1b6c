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
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .heatmaps import colour_layer, lut

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
MAX_LAYER_SIDE = 1024  # heatmap layers are smooth at this size; the radiograph keeps its own
LAYER_QUALITY = 90  # WebP: a third of the PNG's size for LRP's fine-grained maps
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
    layer = colour_layer(heat, signed)
    height, width = layer.shape[:2]
    scale = MAX_LAYER_SIDE / max(height, width)
    if scale < 1:
        layer = cv2.resize(layer, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return layer


def legend_gradient(signed: bool) -> str:
    """A CSS linear-gradient of the map's colours (left: lowest)."""
    colours = lut(signed)
    stops = [colours[i] for i in np.linspace(0, 255, 9).round().astype(int)]
    return "linear-gradient(to right, " + ", ".join(f"rgb({c[2]},{c[1]},{c[0]})" for c in stops) + ")"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _bars(probabilities: Mapping[str, float], thresholds: Mapping[str, float]) -> str:
    rows = []
    for rank, name in enumerate(sorted(probabilities, key=lambda c: -probabilities[c]), 1):
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
<style>{STYLE}
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
<script>{SCRIPT}</script>
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
<title>chexplain reports</title><style>{STYLE}</style></head>
<body><header><h1>Reports</h1><p class="warning" role="note">{_e(banner)}</p></header>
<main><p class="hint">Sort by any column with its button (again to reverse). Highlighted: at or above the class's threshold.</p>
<div class="scroll"><table class="index"><thead><tr>
<th scope="col" aria-sort="none"><button type="button" data-key="0">Radiograph</button></th>
<th scope="col" aria-sort="none"><button type="button" data-key="1">Findings</button></th>{head}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div></main>
<script>{INDEX_SCRIPT}</script></body></html>
"""


def write_report(path: Path, html_text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_text, encoding="utf-8")
    return path


def index_entry(report: Path, root: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    return {"report": report.relative_to(root).as_posix(), "input": Path(record["input"]).name,
            "probabilities": record["probabilities"], "findings": record["findings"]}


STYLE = """
:root{color-scheme:dark;--bg:#111;--fg:#eee;--muted:#aaa;--accent:#ffb000;--pos:#ff6a4d;font:16px/1.4 system-ui,sans-serif}
body{margin:0;background:var(--bg);color:var(--fg)}
header{padding:.5rem 1rem;border-bottom:1px solid #333}
h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.15rem;margin:.8rem 0 .4rem}h3{font-size:1.05rem;margin:.5rem 0}
.warning{margin:.2rem 0;padding:.3rem .6rem;background:#5a1010;border-left:4px solid #ff4040;font-weight:600}
main{padding:0 1rem 2rem}.hint{color:var(--muted);font-size:.9rem;margin:.2rem 0 .5rem}
.top{display:grid;grid-template-columns:minmax(0,3fr) minmax(16rem,2fr);gap:1rem}
@media (max-width:900px){.top{grid-template-columns:1fr}}
.viewer{position:relative;overflow:hidden;background:#000;aspect-ratio:var(--aspect);max-height:80vh;
 max-width:calc(80vh * var(--aspect));outline-offset:2px;touch-action:none;cursor:grab}
.viewer:focus-visible{outline:3px solid var(--accent)}
.stage{position:absolute;inset:0;transform-origin:0 0}
.layer{position:absolute;inset:0;background-size:100% 100%;background-repeat:no-repeat}
.heat{opacity:var(--opacity)}
.zoom{position:absolute;right:.3rem;top:.3rem;display:flex;gap:.2rem}
button,input,label{font:inherit}
button{min-width:2.2rem;min-height:2.2rem;background:#222;color:var(--fg);border:1px solid #555;border-radius:4px;cursor:pointer}
button:focus-visible,input:focus-visible{outline:3px solid var(--accent)}
.bars{list-style:none;margin:0;padding:0}
.bar{display:grid;grid-template-columns:minmax(8rem,12rem) 1fr 4.2rem;gap:.5rem;align-items:center;padding:.15rem 0}
.track{position:relative;height:1rem;background:#2a2a2a;border-radius:2px}
.fill{position:absolute;left:0;top:0;bottom:0;background:#6b8fb3}
.threshold{position:absolute;top:-.25rem;bottom:-.25rem;width:2px;background:var(--fg)}
.bar.positive .fill{background:var(--pos)}.bar.positive .label{font-weight:700;color:var(--pos)}
.value{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.finding{border-top:1px solid #333;padding:.5rem 0}
.finding .p{color:var(--accent)}.finding .t{color:var(--muted);font-size:.9rem}.finding strong{color:var(--pos)}
.controls{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;margin:.3rem 0}
.methods{display:none;border:0;margin:0;padding:0}.methods legend{float:left;margin-right:.5rem}
.finding.single .methods{display:flex;gap:.8rem;align-items:center}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,20rem),1fr));gap:1rem}
.finding.single .figures{grid-template-columns:1fr}
figure{margin:0}figcaption{font-weight:600;margin-bottom:.2rem}
.legend{display:grid;grid-template-columns:1fr;gap:.1rem;max-width:24rem;margin-top:.3rem;font-size:.85rem}
.ramp{height:.7rem;border:1px solid #555}.ends{display:flex;justify-content:space-between}.what{color:var(--muted)}
.about{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem}.about h2{grid-column:1/-1}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:0;font-size:.9rem}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.scroll{overflow-x:auto}table.index{border-collapse:collapse;font-size:.9rem}
.index th,.index td{padding:.25rem .45rem;border-bottom:1px solid #333;text-align:right;white-space:nowrap}
.index td:first-child,.index td:nth-child(2),.index th:first-child,.index th:nth-child(2){text-align:left}
.index td:nth-child(2){white-space:normal;min-width:12rem;max-width:20rem}
.index td.positive{color:var(--pos);font-weight:700}.index a{color:var(--accent)}
"""

SCRIPT = r"""
(() => {
  const groups = new Map();
  function apply(v) { v.stage.style.transform = `translate(${v.x}px,${v.y}px) scale(${v.s})`; }
  function set(v, s, x, y) {
    const w = v.el.clientWidth, h = v.el.clientHeight;
    s = Math.min(16, Math.max(1, s));
    x = Math.min(0, Math.max(w - w * s, x)); y = Math.min(0, Math.max(h - h * s, y));
    for (const u of groups.get(v.group)) { u.s = s; u.x = x; u.y = y; apply(u); }
  }
  function zoomAt(v, factor, cx, cy) { const s = Math.min(16, Math.max(1, v.s * factor)), k = s / v.s;
    set(v, s, cx - (cx - v.x) * k, cy - (cy - v.y) * k); }
  document.querySelectorAll('.viewer').forEach(el => {
    const v = {el, stage: el.querySelector('.stage'), group: el.dataset.group, s: 1, x: 0, y: 0};
    if (!groups.has(v.group)) groups.set(v.group, []);
    groups.get(v.group).push(v);
    el.addEventListener('wheel', e => { e.preventDefault(); const r = el.getBoundingClientRect();
      zoomAt(v, e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top); }, {passive: false});
    let drag = null;
    el.addEventListener('pointerdown', e => { if (e.target.closest('button')) return;
      drag = {x: e.clientX - v.x, y: e.clientY - v.y}; el.setPointerCapture(e.pointerId); });
    el.addEventListener('pointermove', e => { if (drag) set(v, v.s, e.clientX - drag.x, e.clientY - drag.y); });
    el.addEventListener('pointerup', () => { drag = null; });
    el.addEventListener('keydown', e => {
      const w = el.clientWidth / 2, h = el.clientHeight / 2, step = 40;
      const keys = {'+': () => zoomAt(v, 1.25, w, h), '=': () => zoomAt(v, 1.25, w, h), '-': () => zoomAt(v, 0.8, w, h),
        '0': () => set(v, 1, 0, 0), ArrowLeft: () => set(v, v.s, v.x + step, v.y), ArrowRight: () => set(v, v.s, v.x - step, v.y),
        ArrowUp: () => set(v, v.s, v.x, v.y + step), ArrowDown: () => set(v, v.s, v.x, v.y - step)};
      if (keys[e.key]) { e.preventDefault(); keys[e.key](); } });
    el.querySelectorAll('[data-zoom]').forEach(b => b.addEventListener('click', () => {
      const w = el.clientWidth / 2, h = el.clientHeight / 2, z = b.dataset.zoom;
      if (z === 'reset') set(v, 1, 0, 0); else zoomAt(v, z === 'in' ? 1.25 : 0.8, w, h); }));
  });
  document.querySelectorAll('.finding').forEach(article => {
    const slider = article.querySelector('.opacity');
    slider.addEventListener('input', () => article.style.setProperty('--opacity', slider.value / 100));
    const layout = article.querySelector('.layout');
    if (!layout) return;
    const figures = [...article.querySelectorAll('figure')];
    const show = () => { const single = layout.getAttribute('aria-pressed') === 'true';
      const chosen = +(article.querySelector('.methods input:checked') || {value: 0}).value;
      article.classList.toggle('single', single);
      figures.forEach((f, i) => { f.hidden = single && i !== chosen; }); };
    layout.addEventListener('click', () => { layout.setAttribute('aria-pressed', layout.getAttribute('aria-pressed') !== 'true'); show(); });
    article.querySelectorAll('.methods input').forEach(r => r.addEventListener('change', show));
    article.addEventListener('keydown', e => { if (e.key === 'm' && article.classList.contains('single')) {
      const radios = [...article.querySelectorAll('.methods input')], i = radios.findIndex(r => r.checked);
      radios[(i + 1) % radios.length].checked = true; show(); } });
  });
})();
"""

INDEX_SCRIPT = r"""
(() => {
  const table = document.querySelector('table.index'), body = table.tBodies[0];
  table.querySelectorAll('th button').forEach(button => button.addEventListener('click', () => {
    const th = button.parentElement, key = +button.dataset.key;
    const descending = th.getAttribute('aria-sort') !== 'descending';
    table.querySelectorAll('th').forEach(h => h.setAttribute('aria-sort', 'none'));
    th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
    const value = row => row.cells[key].dataset.value, numeric = key > 0;
    const rows = [...body.rows].sort((a, b) => {
      const x = numeric ? +value(a) - +value(b) : value(a).localeCompare(value(b));
      return descending ? -x : x; });
    rows.forEach(r => body.appendChild(r));
  }));
})();
"""

