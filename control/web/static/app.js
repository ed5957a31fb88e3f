// The dashboard's only script: live updates from server-sent events, no framework.
// Everything it writes into the page goes through textContent or a data attribute
// checked against a short pattern: what the server sends is data, never markup.
"use strict";

(function () {
  const STATE = /^[a-z][a-z ]{0,30}$/;

  function lookup(data, path) {
    let value = data;
    for (const key of path) {
      if (value === null || typeof value !== "object" || !Object.hasOwn(value, key)) {
        return undefined;
      }
      value = value[key];
    }
    return value;
  }

  function money(value) {
    return "$" + Number(value).toFixed(2);
  }

  function apply(data) {
    for (const el of document.querySelectorAll("[data-bind]")) {
      const path = JSON.parse(el.dataset.bind);
      const value = lookup(data, path);
      if (value === undefined || value === null) continue;
      const text = path[path.length - 1] === "cost_usd" ? money(value) : String(value);
      if (el.textContent !== text) el.textContent = text;
    }
    for (const el of document.querySelectorAll("[data-state-of]")) {
      const value = lookup(data, JSON.parse(el.dataset.stateOf));
      if (typeof value === "string" && STATE.test(value)) el.dataset.state = value;
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
