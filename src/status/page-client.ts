/**
 * The status page's own script (runs in the browser, after Chart.js): sortable table headers and
 * the three charts, drawn from the JSON in `<script id="fleet-data">` (see html.ts for its
 * shape), in the colours of the current scheme (CSS custom properties; redrawn when the
 * `prefers-color-scheme` changes). Each database has one colour (and point shape) derived from
 * its name; time axes put their ticks on round UTC times and label them by the span shown.
 * Plain ES2019, no template literals (this is a template literal), no network access. Names from
 * the bucket reach only `textContent` and canvas text.
 */
export const PAGE_SCRIPT = String.raw`(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('fleet-data').textContent);

  // --- sortable table -------------------------------------------------------------------
  var table = document.getElementById('fleet');
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  headers.forEach(function (th, col) {
    var button = th.querySelector('button');
    if (!button) return;
    button.addEventListener('click', function () {
      var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
      headers.forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', dir);
      var numeric = th.getAttribute('data-type') === 'number';
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-sort'), y = b.cells[col].getAttribute('data-sort');
        if (x === '' || y === '') return x === y ? 0 : x === '' ? 1 : -1; // unknown last, either way
        var c = numeric ? Number(x) - Number(y) : x < y ? -1 : x > y ? 1 : 0;
        return dir === 'ascending' ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });

  // --- formatting -----------------------------------------------------------------------
  function bytes(n) {
    if (n < 1000) return n + ' B';
    var units = ['kB', 'MB', 'GB', 'TB', 'PB'], u = -1;
    do { n /= 1000; u++; } while (n >= 1000 && u < units.length - 1);
    return n.toFixed(n >= 100 ? 0 : 1) + ' ' + units[u];
  }
  function duration(ms) {
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + ' s';
    if (ms < 3600000) return Math.floor(ms / 60000) + ' min ' + Math.floor((ms % 60000) / 1000) + ' s';
    if (ms < 259200000) return Math.floor(ms / 3600000) + ' h ' + Math.floor((ms % 3600000) / 60000) + ' min';
    return Math.floor(ms / 86400000) + ' d ' + Math.floor((ms % 86400000) / 3600000) + ' h';
  }
  function minute(t) { return new Date(t).toISOString().slice(0, 16).replace('T', ' ') + ' UTC'; }

  // --- time axes ------------------------------------------------------------------------
  // Ticks on round UTC times, the step chosen by the span shown (minutes … years), and labels
  // formatted by that step: "14:00" within a day (a midnight tick says "Dec 7"), "Dec 7" across
  // days and weeks, "Dec 2026" across months, "2026" across years.
  var MINUTE = 60000, HOUR = 3600000, DAY = 86400000;
  var MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  var STEPS = [MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY];
  var MONTH_STEPS = [1, 2, 3, 6, 12, 24, 60, 120];
  var MAX_TICKS = 7;
  function pad2(n) { return (n < 10 ? '0' : '') + n; }
  function dayLabel(d) { return MONTHS[d.getUTCMonth()] + ' ' + d.getUTCDate(); }
  /** Tick values (ms) from min to max and their unit: { ticks, step (ms, or months when monthly), monthly }. */
  function timeTicks(min, max) {
    var span = Math.max(max - min, 1), ticks = [], i, t;
    for (i = 0; i < STEPS.length; i++) {
      if (span / STEPS[i] <= MAX_TICKS) {
        var step = STEPS[i];
        // Weeks start on Monday (1970-01-05 was one); smaller steps align on UTC midnight.
        var origin = step >= 7 * DAY ? 4 * DAY : 0;
        for (t = Math.ceil((min - origin) / step) * step + origin; t <= max; t += step) ticks.push(t);
        return { ticks: ticks, step: step, monthly: false };
      }
    }
    var first = new Date(min), months = 1;
    for (i = 0; i < MONTH_STEPS.length; i++) { months = MONTH_STEPS[i]; if (span / (months * 30.4 * DAY) <= MAX_TICKS) break; }
    var m = first.getUTCFullYear() * 12 + first.getUTCMonth();
    m = Math.ceil(m / months) * months;
    for (;;) {
      t = Date.UTC(Math.floor(m / 12), m % 12, 1);
      if (t > max) break;
      if (t >= min) ticks.push(t);
      m += months;
    }
    return { ticks: ticks, step: months, monthly: true };
  }
  function timeLabel(t, unit) {
    var d = new Date(t);
    if (unit.monthly) return unit.step >= 12 ? String(d.getUTCFullYear()) : MONTHS[d.getUTCMonth()] + ' ' + d.getUTCFullYear();
    if (unit.step < DAY) return d.getUTCHours() === 0 && d.getUTCMinutes() === 0 ? dayLabel(d) : pad2(d.getUTCHours()) + ':' + pad2(d.getUTCMinutes());
    return dayLabel(d);
  }
  /** A linear x axis over the times xs (ms), padded by 4% of their span (at least 30 min) on each side. */
  function timeAxis(xs) {
    var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
    var pad = Math.max((hi - lo) * 0.04, 30 * MINUTE);
    var min = lo - pad, max = hi + pad, unit = timeTicks(min, max);
    return {
      type: 'linear', min: min, max: max, bounds: 'data',
      afterBuildTicks: function (scale) { scale.ticks = unit.ticks.map(function (value) { return { value: value }; }); },
      ticks: { callback: function (t) { return timeLabel(t, unit); }, maxRotation: 0, autoSkipPadding: 12 }
    };
  }

  // --- one colour per database --------------------------------------------------------
  // From its name alone (FNV-1a, 32 bit), so a database keeps its colour whatever else the page
  // shows, in every chart, render and page; a point shape from the same hash tells apart two
  // names that share a colour (10 colours x 4 shapes).
  var SHAPES = ['circle', 'rect', 'triangle', 'rectRot'];
  function nameHash(name) {
    var h = 0x811c9dc5;
    for (var i = 0; i < name.length; i++) { h ^= name.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
    return h;
  }
  function shapeOf(d) { return SHAPES[Math.floor(nameHash(d.name) / 10) % SHAPES.length]; }

  if (typeof Chart === 'undefined') return;
  var charts = [];
  // Chart.js does not wrap a legend entry: a long name keeps its end (the database) and fits a phone.
  var legendLabels = Chart.defaults.plugins.legend.labels.generateLabels;
  Chart.defaults.plugins.legend.labels.generateLabels = function (chart) {
    return legendLabels(chart).map(function (item) {
      if (item.text.length > 40) item.text = '…' + item.text.slice(-39);
      return item;
    });
  };

  function draw() {
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    var css = getComputedStyle(document.documentElement);
    function v(name) { return css.getPropertyValue(name).trim(); }
    var palette = [];
    for (var i = 0; i < 10; i++) palette.push(v('--series-' + i));
    function colorOf(d) { return palette[nameHash(d.name) % palette.length]; }
    var stateColor = { ok: v('--ok'), warning: v('--warning'), stale: v('--stale'), untrusted: v('--failed'), failed: v('--failed') };
    Chart.defaults.color = v('--muted');
    Chart.defaults.borderColor = v('--grid');
    Chart.defaults.font.family = v('--font');
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.plugins.legend.position = 'bottom';
    Chart.defaults.plugins.legend.labels.boxWidth = 12;
    Chart.defaults.plugins.legend.labels.usePointStyle = true;
    function timeTitle(items) { return items.length ? minute(items[0].parsed.x) : ''; }

    // Backup size over time: one line per database.
    var sizeCanvas = document.getElementById('chart-size');
    if (sizeCanvas) {
      var sized = data.databases.filter(function (d) { return d.sizes.length; });
      var sizeXs = [];
      sized.forEach(function (d) { d.sizes.forEach(function (s) { sizeXs.push(s[0]); }); });
      charts.push(new Chart(sizeCanvas, {
        type: 'line',
        data: { datasets: sized.map(function (d) {
          var color = colorOf(d);
          return { label: d.name, data: d.sizes.map(function (s) { return { x: s[0], y: s[1] }; }), borderColor: color, backgroundColor: color, pointStyle: shapeOf(d), pointRadius: 2.5, borderWidth: 2, tension: 0 };
        }) },
        options: {
          parsing: false,
          scales: { x: timeAxis(sizeXs), y: { beginAtZero: true, ticks: { callback: function (b) { return bytes(b); } } } },
          plugins: { tooltip: { callbacks: { title: timeTitle, label: function (c) { return c.dataset.label + ': ' + bytes(c.parsed.y); } } } }
        }
      }));
    }

    // RTO per drill, failed drills as crosses, and the budget line(s).
    var rtoCanvas = document.getElementById('chart-rto');
    if (rtoCanvas) {
      var drilled = data.databases.filter(function (d) { return d.drills.length; });
      var xs = [];
      drilled.forEach(function (d) { d.drills.forEach(function (r) { xs.push(r[0]); }); });
      var rtoAxis = timeAxis(xs), minX = rtoAxis.min, maxX = rtoAxis.max;
      var datasets = drilled.map(function (d) {
        var color = colorOf(d), shape = shapeOf(d);
        return {
          label: d.name,
          data: d.drills.map(function (r) { return { x: r[0], y: r[1] / 1000, ok: r[2] }; }),
          borderColor: color, backgroundColor: color, borderWidth: 2, tension: 0,
          pointStyle: function (c) { return c.raw && c.raw.ok === false ? 'crossRot' : shape; },
          pointRadius: function (c) { return c.raw && c.raw.ok === false ? 7 : 3.5; },
          pointBorderColor: function (c) { return c.raw && c.raw.ok === false ? stateColor.failed : color; },
          pointBorderWidth: function (c) { return c.raw && c.raw.ok === false ? 3 : 1; }
        };
      });
      var budgets = [];
      drilled.forEach(function (d) { if (d.rtoBudgetMs !== null && budgets.indexOf(d.rtoBudgetMs) < 0) budgets.push(d.rtoBudgetMs); });
      budgets.forEach(function (b) {
        datasets.push({
          label: 'RTO budget ' + duration(b), data: [{ x: minX, y: b / 1000 }, { x: maxX, y: b / 1000 }],
          borderColor: stateColor.failed, backgroundColor: stateColor.failed, borderDash: [6, 4], borderWidth: 2, pointRadius: 0, pointHitRadius: 0, pointStyle: 'line'
        });
      });
      charts.push(new Chart(rtoCanvas, {
        type: 'line',
        data: { datasets: datasets },
        options: {
          parsing: false,
          scales: { x: rtoAxis, y: { beginAtZero: true, title: { display: true, text: 'RTO' }, ticks: { callback: function (s) { return duration(s * 1000); } } } },
          plugins: { tooltip: { callbacks: { title: timeTitle, label: function (c) { return c.dataset.label + ': ' + duration(c.parsed.y * 1000) + (c.raw && c.raw.ok === false ? ' (FAILED)' : ''); } } } }
        }
      }));
    }

    // Age of the newest complete backup per database, with the max age as a dashed line.
    var ageCanvas = document.getElementById('chart-age');
    if (ageCanvas) {
      var aged = data.databases.filter(function (d) { return d.ageMs !== null; });
      ageCanvas.parentNode.style.height = Math.max(160, 34 * aged.length + 70) + 'px';
      var maxAgeLine = {
        id: 'maxAgeLine',
        afterDatasetsDraw: function (chart) {
          var x = chart.scales.x.getPixelForValue(data.maxAgeMs / 3600000), area = chart.chartArea, g = chart.ctx;
          if (x < area.left || x > area.right) return;
          g.save();
          g.strokeStyle = stateColor.failed; g.lineWidth = 2; g.setLineDash([6, 4]);
          g.beginPath(); g.moveTo(x, area.top); g.lineTo(x, area.bottom); g.stroke();
          g.setLineDash([]); g.fillStyle = stateColor.failed; g.textAlign = x > area.right - 120 ? 'right' : 'left';
          g.fillText('max age ' + duration(data.maxAgeMs), x + (g.textAlign === 'right' ? -4 : 4), area.top + 10);
          g.restore();
        }
      };
      var ageHours = aged.map(function (d) { return d.ageMs / 3600000; });
      charts.push(new Chart(ageCanvas, {
        type: 'bar',
        data: { labels: aged.map(function (d) { return d.name; }), datasets: [{ label: 'age of the newest complete backup', data: ageHours, backgroundColor: aged.map(function (d) { return stateColor[d.state]; }), borderWidth: 0 }] },
        options: {
          indexAxis: 'y',
          scales: {
            x: { beginAtZero: true, suggestedMax: Math.max(data.maxAgeMs / 3600000 * 1.15, 1), title: { display: true, text: 'hours' } },
            y: { ticks: { autoSkip: false, callback: function (value) { var l = this.getLabelForValue(value); return l.length > 30 ? '…' + l.slice(-29) : l; } } }
          },
          plugins: { legend: { display: false }, tooltip: { callbacks: { label: function (c) { return duration(c.parsed.x * 3600000); } } } }
        },
        plugins: [maxAgeLine]
      }));
    }
    document.documentElement.setAttribute('data-charts', String(charts.length));
  }

  draw();
  if (window.matchMedia) {
    var scheme = window.matchMedia('(prefers-color-scheme: dark)');
    if (scheme.addEventListener) scheme.addEventListener('change', draw);
  }
})();
`;
