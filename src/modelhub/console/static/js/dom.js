// A few DOM helpers: elements from plain data, text only (model output is never HTML).

// h("button", {class: "x", onclick: f}, "text", child, [more, children])
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value);
  }
  el.append(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
  return el;
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim() }, text);
}

// An error line, in place of `el`'s content or appended to it.
export function showError(el, error, { replace = true } = {}) {
  const line = h("p", { class: "error", role: "alert" }, error.message || String(error));
  if (replace) el.replaceChildren(line);
  else el.append(line);
  return line;
}

export function table(columns, rows, { empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", {}, c.cell(row)))))),
  );
}

export const formatNumber = (n) => (n ?? 0).toLocaleString("en-US");
export const formatCost = (c) => (c === undefined || c === null ? "—" : `${Number(c).toFixed(6)}`);
export const formatDate = (s) => (s ? new Date(s).toISOString().slice(0, 16).replace("T", " ") : "—");
