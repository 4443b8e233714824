// thinghub console: progressive enhancement only. Every page and form works without this
// file; with it, pages update live over one WebSocket, the plot draws (uPlot), and the
// device page's forms post in place.
"use strict";

(function () {
  const prefix = document.body.dataset.prefix || "/console";
  const palette = ["#1d4ed8", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2",
    "#be185d", "#4d7c0f", "#9333ea", "#b45309"];

  function sortedJson(value) {
    // As the server writes it (indent 2, keys sorted), so live updates look the same.
    const sort = (v) => {
      if (Array.isArray(v)) return v.map(sort);
      if (v && typeof v === "object") {
        const out = {};
        for (const k of Object.keys(v).sort()) out[k] = sort(v[k]);
        return out;
      }
      return v;
    };
    return JSON.stringify(sort(value), null, 2);
  }

  function setStatus(text) {
    const el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  function flashNew(el) {
    el.classList.remove("flash-new");
    void el.offsetWidth; // restart the animation
    el.classList.add("flash-new");
  }

  // -- the plot ----------------------------------------------------------------------------

  const plot = {
    el: null, chart: null, metrics: [], data: [[]], live: false, windowS: 300,

    init() {
      this.el = document.getElementById("plot");
      if (!this.el || typeof window.uPlot !== "function") return;
      this.live = this.el.dataset.live === "1";
      this.windowS = parseFloat(this.el.dataset.window) || 300;
      fetch(this.el.dataset.series, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
        .then((series) => {
          this.metrics = series.metrics;
          this.data = series.data;
          this.note(series.truncated ? "Showing the newest 5,000 messages of the range." : "");
          this.draw();
        })
        .catch(() => this.note("The history could not be loaded."));
      if (typeof ResizeObserver === "function") {
        new ResizeObserver(() => {
          if (this.chart) this.chart.setSize(this.size());
        }).observe(this.el);
      }
    },

    note(text) {
      const el = document.getElementById("plot-note");
      if (el) el.textContent = text;
    },

    size() {
      const width = Math.max(240, Math.floor(this.el.clientWidth || 600));
      return { width: width, height: width < 500 ? 220 : 280 };
    },

    draw() {
      if (this.chart) this.chart.destroy();
      this.chart = null;
      if (!this.metrics.length) {
        // Nothing to plot yet: no empty axes, just the note (a live plot draws at its first
        // value).
        this.count();
        this.note("No numeric telemetry in this range yet.");
        return;
      }
      const opts = Object.assign(this.size(), {
        series: [{}].concat(this.metrics.map((m, i) => ({
          label: m, stroke: palette[i % palette.length], width: 2, spanGaps: true,
          points: { show: true, size: 4 },
        }))),
        scales: { x: { time: true, range: (u, min, max) => this.span(min, max) } },
        legend: { show: true },
      });
      this.chart = new window.uPlot(opts, this.data, this.el);
      this.count();
    },

    span(min, max) {
      // A streaming plot shows at least a minute (its newest values at the right edge), so
      // its first few points do not stretch over a scale of milliseconds.
      if (min === null || max === null) return [min, max];
      const least = this.live ? Math.min(this.windowS, 60) : 1;
      return max - min >= least ? [min, max] : [max - least, max];
    },

    count() {
      this.el.dataset.points = String(this.data[0].length);
    },

    add(ts, values) {
      if (!this.el || !this.live || typeof window.uPlot !== "function") return;
      let rebuild = !this.chart;
      for (const name of Object.keys(values)) {
        if (this.metrics.indexOf(name) < 0 && this.metrics.length < 20) {
          this.metrics.push(name);
          this.data.push(this.data[0].map(() => null));
          rebuild = true;
        }
      }
      this.data[0].push(ts);
      this.metrics.forEach((m, i) => {
        this.data[i + 1].push(values[m] === undefined ? null : values[m]);
      });
      const oldest = Date.now() / 1000 - this.windowS;
      while (this.data[0].length > 1 && this.data[0][0] < oldest) {
        this.data.forEach((column) => column.shift());
      }
      this.note("");
      if (rebuild) this.draw();
      else {
        this.chart.setData(this.data);
        this.count();
      }
    },
  };

  // -- live updates ------------------------------------------------------------------------

  const handlers = {
    connection(m) {
      document.querySelectorAll('[data-state-of="' + CSS.escape(m.device) + '"]').forEach((el) => {
        const state = m.connected ? "Connected" : "Disconnected";
        if (el.textContent === state) return;
        el.textContent = state;
        el.className = "state state-" + state.toLowerCase();
        flashNew(el);
      });
      if (m.time !== "—") handlers.activity(m);
    },
    activity(m) {
      document.querySelectorAll('[data-activity-of="' + CSS.escape(m.device) + '"]').forEach((el) => {
        el.textContent = m.time;
      });
    },
    telemetry(m) {
      plot.add(m.ts, m.values);
    },
    twin(m) {
      const pre = document.getElementById(m.section === "reported" ? "reported-json" : "desired-json");
      const text = sortedJson(m.properties);
      if (pre && pre.textContent !== text) {
        pre.textContent = text;
        flashNew(pre);
      }
      const version = document.getElementById(m.section + "-version");
      if (version) version.textContent = String(m.version);
      const twinVersion = document.getElementById("twin-version");
      if (twinVersion) twinVersion.textContent = String(m.twinVersion);
      if (m.section === "reported") {
        const updated = document.getElementById("reported-updated");
        if (updated) updated.textContent = m.time;
      }
    },
    event(m) {
      const body = document.querySelector("#events-log tbody");
      if (!body) return;
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      const row = document.createElement("tr");
      for (const [label, text] of [["Time", m.time], ["Type", m.eventType], ["What", m.summary]]) {
        const cell = document.createElement("td");
        cell.dataset.label = label;
        if (label === "Time") cell.className = "time";
        cell.textContent = text;
        row.appendChild(cell);
      }
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > 100) body.deleteRow(body.rows.length - 1);
      flashNew(row);
    },
    device(m) {
      if (document.body.dataset.live === "devices") {
        if (m.operation !== "updated" || m.mine) {
          const note = document.getElementById("list-changed");
          if (note) note.hidden = false;
        }
        return;
      }
      if (!m.mine) return;
      if (m.operation === "deleted") {
        const gone = document.getElementById("device-gone");
        if (gone) gone.hidden = false;
      } else if (m.enabled !== null) {
        const enabled = document.getElementById("device-enabled");
        if (enabled) enabled.textContent = m.enabled ? "yes" : "no";
      }
    },
  };

  function liveUrl() {
    const what = document.body.dataset.live;
    if (!what) return null;
    let query;
    if (what === "devices") {
      const table = document.querySelector("table[data-devices]");
      query = "devices=" + encodeURIComponent(table ? table.dataset.devices : "");
    } else {
      query = "device=" + encodeURIComponent(what);
    }
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + prefix + "/live?" + query;
  }

  function connectLive() {
    const url = liveUrl();
    if (!url) return;
    let delay = 500;
    let leaving = false;
    window.addEventListener("pagehide", () => { leaving = true; });
    const open = () => {
      const socket = new WebSocket(url);
      socket.addEventListener("open", () => { delay = 500; setStatus("live"); });
      socket.addEventListener("message", (event) => {
        let message;
        try { message = JSON.parse(event.data); } catch (e) { return; }
        const handle = handlers[message.type];
        if (handle) handle(message);
      });
      socket.addEventListener("close", (event) => {
        if (leaving) return;
        if (event.code === 4401) {
          location.assign(prefix + "/login?next=" + encodeURIComponent(location.pathname + location.search));
          return;
        }
        if (event.code === 4403 || event.code === 4404) { setStatus("not live"); return; }
        setStatus("reconnecting…");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
      });
    };
    open();
  }

  // -- forms --------------------------------------------------------------------------------

  function enhanceForms() {
    document.addEventListener("submit", (event) => {
      const form = event.target;
      if (!(form instanceof HTMLFormElement)) return;
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
        event.preventDefault();
        return;
      }
      if (!form.hasAttribute("data-enhance") || typeof fetch !== "function") return;
      const section = form.closest("section[id]");
      if (!section) return;
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
      fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      })
        .then((response) => {
          if (response.redirected && response.url.indexOf(prefix + "/login") >= 0) {
            location.assign(response.url);
            return null;
          }
          return response.text().then((html) => ({ html: html, ok: response.ok }));
        })
        .then((result) => {
          if (!result) return;
          const doc = new DOMParser().parseFromString(result.html, "text/html");
          const fresh = doc.getElementById(section.id);
          if (fresh) {
            section.replaceWith(fresh);
            const note = fresh.querySelector(".flash") || fresh;
            note.setAttribute("tabindex", "-1");
            note.focus({ preventScroll: false });
          } else {
            document.open();
            document.write(result.html);
            document.close();
          }
        })
        .catch(() => form.submit())
        .finally(() => { if (button) button.disabled = false; });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    enhanceForms();
    plot.init();
    connectLive();
  });
})();
