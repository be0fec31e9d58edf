/* The usage page's chart: the most desktops held at once per day, one line per pool, and the
 * requests refused for want of a free desktop as bars (their own axis). The figures come from
 * the page (the same ones the table shows); Chart.js is served from node_modules. */
(function () {
  "use strict";

  var canvas = document.getElementById("usage-chart");
  var source = document.getElementById("usage-data");
  if (!canvas || !source || typeof Chart === "undefined") return;
  var report = JSON.parse(source.textContent);
  var labels = [];
  var pools = {};
  var refusals = {};
  report.days.forEach(function (row) {
    if (labels.indexOf(row.day) < 0) labels.push(row.day);
    (pools[row.pool] = pools[row.pool] || {})[row.day] = row.peak_desktops;
    refusals[row.day] = (refusals[row.day] || 0) + row.refusals;
  });
  var palette = ["#0d6efd", "#198754", "#6f42c1", "#fd7e14", "#20c997", "#d63384", "#6c757d", "#0dcaf0"];
  var datasets = Object.keys(pools).map(function (name, index) {
    return {
      type: "line",
      label: name,
      data: labels.map(function (day) { return pools[name][day] || 0; }),
      borderColor: palette[index % palette.length],
      backgroundColor: palette[index % palette.length],
      tension: 0.2,
      yAxisID: "desktops"
    };
  });
  datasets.push({
    type: "bar",
    label: gettext("Refused: no free desktop"),
    data: labels.map(function (day) { return refusals[day] || 0; }),
    backgroundColor: "rgba(220, 53, 69, 0.45)",
    yAxisID: "refusals"
  });
  var chart = new Chart(canvas, {
    data: { labels: labels, datasets: datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        desktops: {
          position: "left",
          beginAtZero: true,
          ticks: { precision: 0 },
          title: { display: true, text: gettext("Most desktops at once") }
        },
        refusals: {
          position: "right",
          beginAtZero: true,
          ticks: { precision: 0 },
          grid: { drawOnChartArea: false },
          title: { display: true, text: gettext("Refusals") }
        }
      }
    }
  });
  // Tests and curious admins can see what was drawn.
  canvas.dataset.drawn = String(chart.data.datasets.length);
})();
