// The dashboard's only script: live updates from server-sent events, no framework.
// Everything it writes into the page goes through textContent or a data attribute
// checked against a short pattern: what the server sends is data, never markup.
"use strict";

(function () {
  const STATE = /^[a-z][a-z ]{0,30}$/;

  function money(value) {
    return "$" + Number(value).toFixed(2);
  }

  // An element marked data-phase, data-worker or data-run shows one entry of the
  // snapshot; its descendants marked data-f show that entry's fields.
  function fill(scope, values, stateField) {
    const state = values[stateField];
    if (scope.hasAttribute("data-state") && typeof state === "string" && STATE.test(state)) {
      scope.dataset.state = state;
    }
    for (const el of scope.querySelectorAll("[data-f]")) {
      const field = el.dataset.f;
      if (!Object.hasOwn(values, field) || values[field] === null) continue;
      const value = values[field];
      const text = field === "cost_usd" ? money(value) : String(value);
      if (el.textContent !== text) el.textContent = text;
      if (el.hasAttribute("data-state") && typeof value === "string" && STATE.test(value)) {
        el.dataset.state = value;
      }
    }
  }

  function entry(table, key) {
    return table && Object.hasOwn(table, key) ? table[key] : null;
  }

  function apply(data) {
    for (const el of document.querySelectorAll("[data-phase]")) {
      const values = entry(data.phases, el.dataset.phase);
      if (values) fill(el, values, "state");
    }
    for (const el of document.querySelectorAll("[data-worker]")) {
      const values = entry(data.workers, el.dataset.worker);
      if (values) fill(el, values, "status");
    }
    if (data.run) {
      for (const el of document.querySelectorAll("[data-run]")) fill(el, data.run, "state");
    }
  }

  function live(on) {
    const badge = document.getElementById("live");
    if (badge) badge.dataset.live = on ? "on" : "off";
  }

  const url = document.body.dataset.stream;
  if (url && window.EventSource) {
    const source = new EventSource(url);
    source.addEventListener("open", () => live(true));
    source.addEventListener("error", () => live(false));
    source.addEventListener("snapshot", (event) => {
      live(true);
      apply(JSON.parse(event.data));
    });
  }

  const log = document.getElementById("log");
  if (log && log.dataset.log && window.EventSource) {
    const about = document.getElementById("log-about");
    const tail = new EventSource(log.dataset.log);
    tail.addEventListener("log", (event) => {
      const data = JSON.parse(event.data);
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent = data.text;
      log.dataset.size = String(data.size);
      if (about) {
        about.textContent = `attempt ${data.attempt} on ${data.worker}, ${data.state}, ${data.size} bytes`;
      }
      if (follow) log.scrollTop = log.scrollHeight;
      if (data.state !== "pending" && data.state !== "claimed") tail.close();
    });
    tail.addEventListener("problem", (event) => {
      if (about) about.textContent = JSON.parse(event.data).error;
    });
  }
})();
