// Usage: tokens, requests and cost over time, by model, key or status, with CSV export.
// An admin reads any contract (or all) from /admin/v1/usage; a tenant its own from /v1/usage.

import { download, getJSON, session } from "./api.js";
import { lineChart } from "./charts.js";
import { formatCost, formatNumber, h, showError, table } from "./dom.js";

const RANGES = {
  "24h": { label: "Last 24 hours", bucket: "hour", count: 24 },
  "7d": { label: "Last 7 days", bucket: "day", count: 7 },
  "30d": { label: "Last 30 days", bucket: "day", count: 30 },
};
const BREAKDOWNS = ["model", "key", "status"];
const METRICS = {
  tokens: { label: "Tokens", of: (row) => row.prompt_tokens + row.completion_tokens, format: formatNumber },
  requests: { label: "Requests", of: (row) => row.requests, format: formatNumber },
  cost: { label: "Cost", of: (row) => row.cost, format: formatCost },
};
const BUCKET_MS = { hour: 3600e3, day: 86400e3 };

function usagePath(params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== undefined));
  return `${session.isAdmin ? "/admin/v1/usage" : "/v1/usage"}?${query}`;
}

// Bucket start times (ms, UTC) ending with the current, partial one.
function buckets(range) {
  const size = BUCKET_MS[range.bucket];
  const current = Math.floor(Date.now() / size) * size;
  return Array.from({ length: range.count }, (_, i) => current - (range.count - 1 - i) * size);
}

// One query per bucket, grouped by the breakdown: each group's values over time.
async function collect(contract, range, by) {
  const starts = buckets(range);
  const size = BUCKET_MS[range.bucket];
  const iso = (ms) => new Date(ms).toISOString();
  const reports = await Promise.all(
    starts.map((start) => getJSON(usagePath({ contract, by, since: iso(start), until: iso(start + size) }))),
  );
  const groups = new Map();
  reports.forEach((report, i) => {
    for (const row of report.data ?? report) {
      const name = String(row[by]);
      if (!groups.has(name)) groups.set(name, Array(starts.length).fill(null));
      groups.get(name)[i] = row;
    }
  });
  return { times: starts.map((ms) => ms / 1000), groups };
}

function totals(groups, by) {
  return [...groups].map(([name, rows]) => {
    const present = rows.filter(Boolean);
    const sum = (f) => present.reduce((acc, r) => acc + (r[f] || 0), 0);
    return {
      [by]: name,
      requests: sum("requests"),
      prompt_tokens: sum("prompt_tokens"),
      image_tokens: sum("image_tokens"),
      completion_tokens: sum("completion_tokens"),
      cost: sum("cost"),
    };
  });
}

export async function render(root) {
  const controls = {
    contract: h("select", { id: "usage-contract", hidden: !session.isAdmin }, h("option", { value: "" }, "All contracts")),
    range: h("select", { id: "usage-range" }, Object.entries(RANGES).map(([k, r]) => h("option", { value: k }, r.label))),
    by: h("select", { id: "usage-by" }, BREAKDOWNS.map((b) => h("option", { value: b }, `by ${b}`))),
    refresh: h("button", { type: "button", id: "usage-refresh", class: "secondary" }, "Refresh"),
    csv: h("button", { type: "button", id: "usage-csv", class: "secondary" }, "Export CSV"),
  };
  const charts = h("div", { class: "charts", id: "usage-charts" });
  const summary = h("div", { id: "usage-table" });
  root.append(
    h("h1", {}, "Usage"),
    h("div", { class: "row controls" }, controls.contract, controls.range, controls.by, h("span", { class: "spacer" }), controls.refresh, controls.csv),
    charts,
    summary,
  );
  if (session.isAdmin) {
    try {
      const contracts = (await getJSON("/admin/v1/contracts")).data;
      controls.contract.append(...contracts.map((c) => h("option", { value: c.name }, c.name)));
    } catch (error) {
      showError(root, error, { replace: false });
    }
  }
  let destroy = [];
  const draw = async () => {
    const range = RANGES[controls.range.value];
    const by = controls.by.value;
    let result;
    try {
      result = await collect(controls.contract.value, range, by);
    } catch (error) {
      return showError(charts, error);
    }
    destroy.forEach((d) => d());
    destroy = [];
    charts.replaceChildren();
    const rows = totals(result.groups, by);
    charts.dataset.requests = rows.reduce((acc, r) => acc + r.requests, 0);
    charts.dataset.tokens = rows.reduce((acc, r) => acc + r.prompt_tokens + r.completion_tokens, 0);
    const boxes = Object.keys(METRICS).map((name) => h("div", { class: "chart card", dataset: { metric: name } }));
    charts.append(...boxes); // all in place first: each chart takes its box's final width
    Object.values(METRICS).forEach((metric, i) => {
      const series = Object.fromEntries([...result.groups].map(([g, values]) => [g, values.map((r) => (r ? metric.of(r) : 0))]));
      if (!Object.keys(series).length) series["no requests"] = result.times.map(() => 0);
      const title = `${metric.label} per ${range.bucket}, by ${by}`;
      destroy.push(lineChart(boxes[i], { title, times: result.times, series, format: metric.format }).destroy);
    });
    summary.replaceChildren(
      table(
        [
          { label: by, cell: (r) => h("code", {}, r[by]) },
          { label: "Requests", cell: (r) => formatNumber(r.requests) },
          { label: "Prompt tokens", cell: (r) => formatNumber(r.prompt_tokens) },
          { label: "Image tokens", cell: (r) => formatNumber(r.image_tokens) },
          { label: "Completion tokens", cell: (r) => formatNumber(r.completion_tokens) },
          { label: "Cost", cell: (r) => formatCost(r.cost) },
        ],
        rows,
        { empty: "No requests in this range." },
      ),
    );
  };
  controls.csv.addEventListener("click", async () => {
    const range = RANGES[controls.range.value];
    const since = new Date(buckets(range)[0]).toISOString();
    const by = controls.by.value;
    try {
      await download(usagePath({ contract: controls.contract.value, by, since, format: "csv" }), `usage-by-${by}.csv`);
    } catch (error) {
      showError(summary, error, { replace: false });
    }
  });
  for (const el of [controls.contract, controls.range, controls.by]) el.addEventListener("change", draw);
  controls.refresh.addEventListener("click", draw);
  await draw();
  return () => destroy.forEach((d) => d());
}
