// Live alarms: the server says "change" over SSE; the page fetches its rows again (scoped on the
// server, as the page is) and sounds a short tone for an alarm it has not shown before, unless
// the user muted it (kept in this browser).
(function () {
  "use strict";
  var me = document.currentScript;
  var body = document.getElementById("alarm-rows");
  var live = document.getElementById("live");
  var mute = document.getElementById("mute");
  var seen = {};
  var audio = null;
  function ids() {
    var out = [];
    body.querySelectorAll("tr[data-event]").forEach(function (tr) { out.push(tr.dataset.event); });
    return out;
  }
  ids().forEach(function (id) { seen[id] = true; });
  function muted() { return localStorage.getItem("gasguard.mute") === "1"; }
  function showMute() {
    mute.setAttribute("aria-pressed", muted() ? "true" : "false");
    mute.textContent = muted() ? mute.dataset.off : mute.dataset.on;
  }
  mute.addEventListener("click", function () {
    localStorage.setItem("gasguard.mute", muted() ? "0" : "1");
    showMute();
  });
  showMute();
  function beep() {
    if (muted()) return;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      var osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.value = 0.2;
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + 0.4);
    } catch (e) { /* no audio device: the highlight still shows */ }
    document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
  }
  function refresh() {
    fetch("/alarms/rows", { credentials: "same-origin" }).then(function (r) {
      if (r.redirected || !r.ok) { location.reload(); return null; }
      return r.text();
    }).then(function (html) {
      if (html === null) return;
      body.innerHTML = html;
      var fresh = ids().filter(function (id) { return !seen[id]; });
      fresh.forEach(function (id) { seen[id] = true; });
      if (fresh.length) beep();
    });
  }
  var source = new EventSource("/events");
  source.addEventListener("open", function () {
    live.textContent = me.dataset.live;
    live.classList.remove("lost");
  });
  source.addEventListener("error", function () {
    live.textContent = me.dataset.lost;
    live.classList.add("lost");
  });
  source.addEventListener("change", refresh);
  setInterval(refresh, 60000); // ages and the stale highlight move on without events too
})();
