// City overview: alarms per day (a bar chart) and the units on a map (一张图), both drawn by
// plotly.js from the package. Data from the console's JSON (/api/alarms/daily, /api/map), scoped
// on the server as every page is. The map has no tiles: a plain background, the deployment's
// outlines and the units, so nothing is fetched from outside.
(function () {
  "use strict";
  var COLORS = { alarm: "#d32f2f", offline: "#757575", fault: "#f57c00",
                 noncompliant: "#fbc02d", normal: "#2e7d32" };
  var ORDER = ["normal", "noncompliant", "fault", "offline", "alarm"];  // worst drawn on top
  var CONFIG = { responsive: true, displaylogo: false,
                 modeBarButtonsToRemove: ["lasso2d", "select2d"] };
  var BLANK = { version: 8, sources: {},
                layers: [{ id: "background", type: "background",
                           paint: { "background-color": "#eef1f5" } }] };

  // plotly reads a few tags in its text (<b>, <a href>...) and decodes entities: a unit's or a
  // district's name is the registry's text, to be shown as written
  function esc(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { location.reload(); }
      if (!r.ok) { throw new Error(url + ": " + r.status); }
      return r.json();
    });
  }

  function failed(el, labels) {
    el.textContent = labels.failed;
    el.classList.add("failed");
  }

  // --- alarms per day ---------------------------------------------------------------------------
  var chart = document.getElementById("alarm-chart");
  var chartLabels = JSON.parse(chart.dataset.labels);
  var daily = null;

  function drawChart(split) {
    var traces;
    if (split === "total") {
      traces = [{ type: "bar", name: chartLabels.total, x: daily.days, y: daily.total,
                  marker: { color: "#17324d" } }];
    } else {
      traces = daily.districts.map(function (d) {
        return { type: "bar", name: esc(d.name || d.district || chartLabels.unregistered),
                 x: daily.days, y: d.counts };
      });
    }
    Plotly.react(chart, traces, {
      barmode: "stack", height: 320, margin: { l: 40, r: 10, t: 10, b: 40 },
      xaxis: { type: "date", tickformat: "%m-%d", fixedrange: true },
      yaxis: { title: { text: chartLabels.alarms }, rangemode: "tozero", fixedrange: true,
               dtick: Math.max.apply(null, daily.total) > 10 ? undefined : 1 },
      legend: { orientation: "h", y: -0.2 }, showlegend: split !== "total"
    }, CONFIG).then(function () { chart.dataset.ready = split; });
  }

  document.querySelectorAll("button.split").forEach(function (b) {
    b.addEventListener("click", function () {
      document.querySelectorAll("button.split").forEach(function (o) {
        o.setAttribute("aria-pressed", o === b ? "true" : "false");
      });
      if (daily) drawChart(b.dataset.split);
    });
  });
  getJSON("/api/alarms/daily").then(function (d) {
    daily = d;
    drawChart("district");
  }).catch(function () { failed(chart, chartLabels); });

  // --- the map ----------------------------------------------------------------------------------
  var map = document.getElementById("unit-map");
  var mapLabels = JSON.parse(map.dataset.labels);
  var note = document.getElementById("map-note");

  function extend(box, lon, lat) {
    box.w = Math.min(box.w, lon); box.e = Math.max(box.e, lon);
    box.s = Math.min(box.s, lat); box.n = Math.max(box.n, lat);
  }

  function outlineBox(box, fc) {
    fc.features.forEach(function (f) {
      var g = f.geometry;
      var polys = g.type === "Polygon" ? [g.coordinates] : g.coordinates;
      polys.forEach(function (p) { p.forEach(function (ring) {
        ring.forEach(function (pos) { extend(box, pos[0], pos[1]); });
      }); });
    });
  }

  // centre and zoom that show the whole box (Web Mercator, 512-pixel tiles as MapLibre draws)
  function fit(box, width, height) {
    function y(lat) {
      var s = Math.sin(lat * Math.PI / 180);
      return Math.log((1 + s) / (1 - s)) / 2;
    }
    var lonSpan = Math.max(box.e - box.w, 0.005);
    var ySpan = Math.max(y(box.n) - y(box.s), 0.0001);
    var zoom = Math.min(Math.log2(width * 360 / (512 * lonSpan)),
                        Math.log2(height * 2 * Math.PI / (512 * ySpan)), 15) - 0.4;
    return { center: { lon: (box.w + box.e) / 2, lat: (box.s + box.n) / 2 }, zoom: zoom };
  }

  getJSON("/api/map").then(function (d) {
    var box = { w: 180, e: -180, s: 90, n: -90 };
    var traces = [];
    ORDER.forEach(function (state) {
      var c = d.states[state];
      c.lon.forEach(function (lon, i) { extend(box, lon, c.lat[i]); });
      traces.push({
        type: "scattermap", mode: "markers", lon: c.lon, lat: c.lat, customdata: c.site,
        text: c.site.map(function (s, i) { return esc((c.name[i] || s) + " · " + s); }),
        hovertemplate: "%{text}<extra>" + mapLabels[state] + "</extra>",
        name: mapLabels[state] + " " + c.site.length,  // on the map; the note counts the rest
        marker: { size: 12, color: COLORS[state] },
        cluster: { enabled: true, color: COLORS[state], opacity: 0.9, size: [16, 22, 30],
                   step: [10, 100] }
      });
    });
    var placed = traces.some(function (t) { return t.lon.length; });
    if (d.unplaced) note.textContent = note.dataset.unplaced.replace("%(n)s", d.unplaced);
    if (!placed && !d.boundaries.features.length) {
      note.textContent = note.dataset.empty + " " + note.textContent;
      map.hidden = true;
      return;
    }
    if (!placed) outlineBox(box, d.boundaries);
    var height = map.clientHeight || 420;
    var view = fit(box, map.clientWidth || 600, height);
    var layers = d.boundaries.features.length ? [
      { sourcetype: "geojson", source: d.boundaries, type: "fill", color: "#17324d",
        opacity: 0.05, below: "traces" },
      { sourcetype: "geojson", source: d.boundaries, type: "line", color: "#17324d",
        opacity: 0.6, line: { width: 1.5 } }
    ] : [];
    Plotly.newPlot(map, traces, {
      height: height, margin: { l: 0, r: 0, t: 0, b: 0 },
      map: { style: BLANK, center: view.center, zoom: view.zoom, layers: layers },
      legend: { orientation: "h", x: 0, y: 1, bgcolor: "rgba(255,255,255,0.85)" }
    }, CONFIG).then(function () {
      map.dataset.ready = "1";  // for whoever waits on it (the browser tests)
    });
    map.on("plotly_click", function (e) {
      var p = e.points && e.points[0];
      if (p && typeof p.customdata === "string") {
        location.href = "/units/" + encodeURIComponent(p.customdata);
      }
    });
  }).catch(function () { failed(map, mapLabels); });
})();
