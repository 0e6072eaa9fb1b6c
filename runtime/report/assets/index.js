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
