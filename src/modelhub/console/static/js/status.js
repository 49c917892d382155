// Status (admin): queue, running sequences, KV-cache use, TTFT and TPOT, polled live.
// TTFT and TPOT are medians since the hub started (GET /admin/v1/status).

import { getJSON } from "./api.js";
import { lineChart } from "./charts.js";
import { formatNumber, h, showError, table } from "./dom.js";

const POLL_MS = 2000;
const KEEP = 90; // points of history in the live chart (3 minutes)

const ms = (seconds) => (seconds === null || seconds === undefined ? "—" : `${(seconds * 1000).toFixed(1)} ms`);
const percent = (fraction) => (fraction === null || fraction === undefined ? "—" : `${(fraction * 100).toFixed(1)} %`);

function figure(label, value, id) {
  return h("div", { class: "card figure", id }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
}

export async function render(root) {
  const figures = h("div", { class: "figures", id: "status-figures" });
  const chartBox = h("div", { class: "chart card", id: "status-chart" });
  const models = h("div", { id: "status-models" });
  const updated = h("p", { class: "muted", id: "status-updated" });
  root.append(h("h1", {}, "Status"), figures, chartBox, h("h2", {}, "By model"), models, updated);
  const history = { times: [], queued: [], running: [] };
  let chart = null;

  const poll = async () => {
    let status;
    try {
      status = await getJSON("/admin/v1/status");
    } catch (error) {
      return showError(models, error);
    }
    const rows = status.data;
    const sum = (f) => rows.reduce((acc, r) => acc + (r[f] || 0), 0);
    figures.replaceChildren(
      figure("Queued", formatNumber(sum("queued")), "status-queued"),
      figure("Running sequences", formatNumber(sum("running")), "status-running"),
      figure("Slots in use", `${formatNumber(sum("running"))} / ${formatNumber(sum("slots"))}`, "status-slots"),
      figure("Requests since start", formatNumber(sum("requests")), "status-requests"),
    );
    models.replaceChildren(
      table(
        [
          { label: "Model", cell: (r) => h("code", {}, r.model) },
          { label: "Queued", cell: (r) => formatNumber(r.queued) },
          { label: "Running", cell: (r) => `${formatNumber(r.running)} / ${formatNumber(r.slots)}` },
          { label: "KV cache", cell: (r) => percent(r.kv_cache_usage) },
          { label: "TTFT p50", cell: (r) => ms(r.ttft_p50_s) },
          { label: "TPOT p50", cell: (r) => ms(r.tpot_p50_s) },
          { label: "Requests", cell: (r) => formatNumber(r.requests) },
        ],
        rows,
      ),
    );
    history.times.push(Date.now() / 1000);
    history.queued.push(sum("queued"));
    history.running.push(sum("running"));
    for (const series of Object.values(history)) series.splice(0, series.length - KEEP);
    const series = { queued: history.queued, running: history.running };
    if (chart) chart.update(history.times, series);
    else chart = lineChart(chartBox, { title: "Queued and running (live)", times: history.times, series });
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${POLL_MS / 1000} s.`;
  };
  await poll();
  const timer = setInterval(poll, POLL_MS);
  return () => {
    clearInterval(timer);
    chart?.destroy();
  };
}
