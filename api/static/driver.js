// Draws the driver page's stacked bar charts from the JSON blocks the server rendered next
// to each table (the same numbers). Without the chart library the tables stand alone.
"use strict";

(function () {
  var COLOURS = ["#2f6fb0", "#3a9a5b", "#c9822b", "#8a5cb8", "#b8475a", "#4aa3a8", "#7d7d3a"];
  var ME_COLOUR = "#6b7280";

  function draw() {
    var canvases = document.querySelectorAll("canvas.chart");
    if (canvases.length === 0) {
      return;
    }
    if (typeof window.Chart === "undefined") {
      var failed = document.getElementById("charts-failed");
      if (failed) {
        failed.hidden = false;
      }
      return;
    }
    canvases.forEach(function (canvas) {
      var source = document.getElementById(canvas.dataset.source);
      if (!source) {
        return;
      }
      var all = JSON.parse(source.textContent);
      var view = all[canvas.dataset.view];
      var last = view.series.length - 1;
      var datasets = view.series.map(function (series, n) {
        return {
          label: series.label,
          data: series.data,
          backgroundColor: n === last && all.me_last ? ME_COLOUR : COLOURS[n % COLOURS.length],
        };
      });
      new window.Chart(canvas, {
        type: "bar",
        data: { labels: view.labels, datasets: datasets },
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          scales: {
            x: { stacked: true },
            y: { stacked: true, title: { display: true, text: all.unit } },
          },
          plugins: { legend: { position: "bottom" } },
        },
      });
      canvas.dataset.drawn = "true";
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
