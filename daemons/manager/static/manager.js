// natt-manager: live values by polling the page's JSON endpoint every 2 s (no framework, no CDN).
// A page marks its live values with data-bind="path.in.the.json"; when the JSON's "key" (what the page's layout
// depends on: the sessions, the SAs) differs from the page's, the page reloads instead.
(function () {
  "use strict";
  var PERIOD = 2000;
  var status = document.getElementById("poll-status");

  function say(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.className = bad ? "bad" : "";
  }

  function lookup(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }

  function getJson(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/login?expired=1"); throw new Error("session ended"); }
        return r.json().then(function (data) {
          if (!r.ok) throw new Error(data.error || r.statusText);
          return data;
        });
      });
  }

  function pollValues(root) {
    var url = root.dataset.poll;
    function tick() {
      getJson(url).then(function (data) {
        if (data.key !== root.dataset.key) { window.location.reload(); return; }
        root.querySelectorAll("[data-bind]").forEach(function (el) {
          var v = lookup(data, el.dataset.bind);
          if (v === undefined || v === null) return;
          v = String(v);
          if (el.textContent !== v) {
            el.textContent = v;
            el.classList.remove("changed");
            void el.offsetWidth;  // restart the highlight
            el.classList.add("changed");
          }
        });
        say("live · updated " + new Date().toLocaleTimeString());
      }).catch(function (e) { say("not updated: " + e.message, true); })
        .finally(function () { setTimeout(tick, PERIOD); });
    }
    setTimeout(tick, PERIOD);
  }

  function tailLog(box) {
    var tail = document.getElementById("tail");
    var since = Number(box.dataset.since || 0);
    var keep = 2000;
    function tick() {
      if (!tail || !tail.checked) { say("live tail off"); setTimeout(tick, PERIOD); return; }
      getJson(box.dataset.tail + "&since=" + since).then(function (data) {
        var empty = document.getElementById("log-empty");
        data.entries.forEach(function (e) {
          if (e.seq <= since) return;
          since = e.seq;
          if (empty) { empty.remove(); empty = null; }
          var pre = document.createElement("pre");
          pre.className = "entry new sev" + e.severity;
          pre.dataset.seq = e.seq;
          pre.textContent = e.text;
          box.appendChild(pre);
        });
        while (box.children.length > keep) box.removeChild(box.firstChild);
        if (data.entries.length) pre_scroll(box);
        say("live tail · " + new Date().toLocaleTimeString());
      }).catch(function (e) { say("not updated: " + e.message, true); })
        .finally(function () { setTimeout(tick, PERIOD); });
    }
    setTimeout(tick, PERIOD);
  }

  function pre_scroll(box) {
    var last = box.lastElementChild;
    if (last) last.scrollIntoView({ block: "nearest" });
  }

  document.querySelectorAll("[data-poll]").forEach(pollValues);
  var log = document.getElementById("log");
  if (log && log.dataset.tail) tailLog(log);
})();
