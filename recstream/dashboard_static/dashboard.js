// The live page: one EventSource, four uPlot charts, number tiles and a user timeline.
"use strict";

const MAX_POINTS = 600;
const COLORS = ["#2a5db0", "#d9822b", "#3a9a4a", "#b03a8f", "#7a5cc0", "#c0392b"];
let source = null;
let chosenUser = "";

const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 0) =>
  v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const age = (s) => (s === null || s === undefined ? "–" : s < 120 ? `${fmt(s)} s` : s < 7200 ? `${fmt(s / 60, 1)} min` : `${fmt(s / 3600, 1)} h`);

// Swaps: [{t, version}] where the served model version changed (marked on the time axis).
const swaps = [];
const swapMarks = {
  hooks: {
    draw: [(u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#888";
      ctx.fillStyle = "#555";
      ctx.setLineDash([4, 3]);
      ctx.font = `${10 * devicePixelRatio}px sans-serif`;
      for (const s of swaps) {
        const x = u.valToPos(s.t, "x", true);
        if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
        ctx.beginPath();
        ctx.moveTo(x, u.bbox.top);
        ctx.lineTo(x, u.bbox.top + u.bbox.height);
        ctx.stroke();
        ctx.fillText(s.version, x + 3, u.bbox.top + 10 * devicePixelRatio);
      }
      ctx.restore();
    }],
  },
};

function noteSwap(p) {
  if (!p.model_version) return;
  const last = swaps.length ? swaps[swaps.length - 1].version : null;
  if (last === p.model_version) return;
  // The first version seen is where serving started; a later change is a swap.
  swaps.push({ t: p.t, version: p.model_version });
}

function makeChart(el, labels, opts = {}) {
  const series = [{}].concat(labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true })));
  const data = [[]].concat(labels.map(() => []));
  const width = Math.max(400, el.parentElement.clientWidth - 16);
  const chart = new uPlot({ width, height: 200, series, plugins: [swapMarks], scales: { x: { time: true }, ...(opts.scales || {}) }, axes: [{}, { size: 60 }] }, data, el);
  return { chart, data, labels };
}

const charts = {};
function initCharts() {
  charts.throughput = makeChart($("chart-throughput"), ["events in/s", "recs out/s"]);
  charts.latency = makeChart($("chart-latency"), ["p50", "p95", "p99"]);
  charts.lag = makeChart($("chart-lag"), ["lag"]);
  charts.hr = makeChart($("chart-hr"), [], { scales: { y: { range: [0, 1] } } });
  charts.hrPoints = [];
}

function push(c, x, ys) {
  c.data[0].push(x);
  ys.forEach((y, i) => c.data[i + 1].push(y === undefined ? null : y));
  if (c.data[0].length > MAX_POINTS) c.data.forEach((a) => a.shift());
}

function addPoint(p, redraw = true) {
  if (!p) return;
  push(charts.throughput, p.t, [p.events_per_s, p.recs_per_s]);
  push(charts.latency, p.t, [p.latency_p50, p.latency_p95, p.latency_p99]);
  push(charts.lag, p.t, [p.lag_total]);
  noteSwap(p);
  charts.hrPoints.push(p);
  if (charts.hrPoints.length > MAX_POINTS) charts.hrPoints.shift();
  if (redraw) redrawAll();
}

function redrawHr() {
  // One series per model version seen; rebuilt when a new version appears.
  const versions = [...new Set(charts.hrPoints.flatMap((p) => Object.keys(p.hr || {})))].sort();
  const c = charts.hr;
  if (versions.join("|") !== c.labels.join("|")) {
    c.chart.destroy();
    charts.hr = makeChart($("chart-hr"), versions, { scales: { y: { range: [0, 1] } } });
  }
  const data = [charts.hrPoints.map((p) => p.t)].concat(
    versions.map((v) => charts.hrPoints.map((p) => (p.hr && v in p.hr ? p.hr[v] : null)))
  );
  charts.hr.chart.setData(data);
}

function redrawAll() {
  for (const name of ["throughput", "latency", "lag"]) charts[name].chart.setData(charts[name].data);
  redrawHr();
}

function renderTiles(msg) {
  const live = msg.live, m = msg.metrics || {};
  $("events-total").textContent = fmt(live.events_total);
  $("events-rate").textContent = fmt(live.events_per_s, 1);
  $("recs-total").textContent = fmt(live.recs_total);
  $("recs-rate").textContent = fmt(live.recs_per_s, 1);
  $("lat-p50").textContent = fmt(live.latency_ms.p50);
  $("lat-p95").textContent = fmt(live.latency_ms.p95);
  $("lat-p99").textContent = fmt(live.latency_ms.p99);
  $("dlq-total").textContent = fmt(live.dlq_total);
  $("dlq-reasons").textContent = Object.entries(live.dlq_by_reason).map(([r, n]) => `${r} ${n}`).join(" · ") || "none";
  $("users-seen").textContent = fmt(live.users_seen);
  $("lag-total").textContent = fmt(m.lag_total);
  const online = m.online || {};
  const current = m.model_version && online[m.model_version] ? m.model_version : Object.keys(online).pop();
  const o = current ? online[current] : null;
  $("online-hr").textContent = o ? fmt(o.rolling_hr_at_10, 3) : "–";
  $("online-ndcg").textContent = o ? fmt(o.rolling_ndcg_at_10, 3) : "–";
  $("online-trials").textContent = o ? fmt(o.trials) : "–";
  $("model-version").textContent = m.model_version || "–";
  $("model-age").textContent = age(m.model_age_s);
  $("model-swaps").textContent = m.swaps ? fmt(m.swaps.model_swaps || 0) : fmt(Math.max(0, swaps.length - 1));
  $("scorer-batch").textContent = fmt(m.scorer_batch_mean, 1);
  $("scorer-batch-ms").textContent = m.scorer_batch_ms ? fmt(m.scorer_batch_ms.p50, 1) : "–";
  $("table-keys").textContent = m.table_keys ? Object.entries(m.table_keys).map(([t, n]) => `${t} ${fmt(n)}`).join(" · ") : "–";
  const procs = [];
  if (msg.metrics_configured) {
    procs.push(`worker ${m.worker_up ? (m.worker_ready ? "ready" : "up") : "down"}`);
    procs.push(`scorer ${m.scorer_up ? (m.scorer_ready ? "ready" : "up") : "down"}`);
  }
  $("procs").textContent = procs.join(" · ");
  const busiest = $("busiest");
  busiest.replaceChildren(...live.busiest_users.map((u) => {
    const a = document.createElement("a");
    a.textContent = u;
    a.onclick = () => { $("user-input").value = u; choose(u); };
    return a;
  }));
}

function renderUser(view) {
  const body = $("user-table").querySelector("tbody");
  if (!view) { $("user-title").textContent = "no user seen yet"; body.replaceChildren(); return; }
  $("user-title").textContent = view.found ? `${view.user_id}: ${view.event_count} events seen` : `${view.user_id}: not seen (yet)`;
  body.replaceChildren(...view.events.map((e) => {
    const tr = document.createElement("tr");
    const rec = e.recommendation;
    const cells = [
      `${e.item_id}`, e.event_type,
      e.hit_rank === null ? "" : `hit @${e.hit_rank + 1}`,
      null,
      rec ? rec.model_version : "",
      rec ? `${fmt(rec.latency_ms)} ms` : "",
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 3) {
        td.className = "items";
        if (rec) {
          const because = new Set((rec.explanation || []).map((x) => x.item_id));
          td.replaceChildren(...rec.items.slice(0, 10).map((it) => {
            const s = document.createElement("span"); s.textContent = it; return s;
          }));
          if (because.size) {
            const why = document.createElement("div");
            why.className = "why";
            why.textContent = "because of: " + rec.explanation.map((x) => `${x.item_id} (${fmt(x.weight, 2)})`).join(", ");
            td.appendChild(why);
          }
        }
      } else {
        td.textContent = text;
      }
      if (i === 2 && e.hit_rank !== null) td.className = "hit";
      tr.appendChild(td);
    });
    return tr;
  }));
}

function connect() {
  if (source) source.close();
  const conn = $("conn");
  source = new EventSource("/stream" + (chosenUser ? "?user=" + encodeURIComponent(chosenUser) : ""));
  source.onopen = () => { conn.textContent = "live"; conn.className = "pill ok"; };
  source.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "pill bad"; };
  source.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.history) {
      // Reconnects (a new user chosen) resend the history: add only what is new.
      const xs = charts.throughput.data[0];
      const newest = xs.length ? xs[xs.length - 1] : -Infinity;
      msg.history.filter((p) => p.t > newest).forEach((p) => addPoint(p, false));
      redrawAll();
      return;
    }
    renderTiles(msg);
    renderUser(msg.user);
    renderCatalogue(msg.catalogue);
    const last = charts.throughput.data[0];
    if (msg.point && (!last.length || msg.point.t > last[last.length - 1])) addPoint(msg.point);
  };
}

function renderCatalogue(watches) {
  const body = $("catalogue-table").querySelector("tbody");
  body.replaceChildren(...(watches || []).map((w) => {
    const tr = document.createElement("tr");
    for (const v of [w.item_id, w.action === "add" ? "added" : "retired", `${w.age_s} s`, fmt(w.lists), fmt(w.holding)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    tr.lastChild.className = (w.action === "retire") === (w.holding === 0) ? "hit" : "";
    return tr;
  }));
}

async function sendItem(action) {
  const status = $("item-status");
  const body = {action, item_id: $("item-id").value.trim(), text: $("item-text").value.trim(),
                category: $("item-category").value.trim()};
  try {
    const r = await fetch("/api/items", {method: "POST", body: JSON.stringify(body),
                                         headers: {"Content-Type": "application/json"}});
    const answer = await r.json();
    status.textContent = r.ok ? `${answer.item_id}: ${action === "add" ? "added" : "retired"}`
                              : `refused (${answer.field}): ${answer.detail}`;
  } catch (e) {
    status.textContent = `not sent: ${e}`;
  }
}

function choose(user) { chosenUser = user.trim(); connect(); }

window.addEventListener("load", () => {
  initCharts();
  $("user-input").addEventListener("change", (e) => choose(e.target.value));
  $("item-form").addEventListener("submit", (e) => { e.preventDefault(); sendItem(e.submitter.value); });
  connect();
});
