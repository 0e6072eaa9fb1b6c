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
