// Models: the catalog with lifecycle badges, and (for admins) backend and replica health.

import { getJSON, session } from "./api.js";
import { badge, formatNumber, h, showError, table } from "./dom.js";

// The catalog (GET /v1/models takes an API key or an admin token).
export async function loadCatalog() {
  return (await getJSON("/v1/models")).data;
}

const STAGE_KIND = { active: "ok", deprecated: "warn", retired: "bad", upcoming: "info" };

export function lifecycleBadges(model) {
  const life = model.lifecycle;
  const badges = [badge(life.status, STAGE_KIND[life.status])];
  if (life.end_of_life) badges.push(badge(`sunset ${life.end_of_life}`, life.status === "retired" ? "bad" : "warn"));
  if (life.successor) badges.push(badge(`successor ${life.successor}`, "info"));
  if (life.alternative) badges.push(badge(`alternative ${life.alternative}`, "info"));
  return h("span", { class: "badges lifecycle" }, badges);
}

function modelCard(model) {
  const tech = model.technology;
  const served = model.availability;
  return h(
    "article",
    { class: "card model", dataset: { model: model.id } },
    h("header", {}, h("h2", {}, model.name), h("code", {}, model.id)),
    lifecycleBadges(model),
    h("p", {}, model.summary),
    h(
      "dl",
      { class: "facts" },
      fact("Served", served.available ? badge(served.engine || "yes", "ok") : badge("not served", "bad")),
      fact("Context", formatNumber(model.max_model_len)),
      fact("Parameters", tech.parameters),
      fact("Quantization", tech.quantization),
      fact("Input", model.modalities.input.join(", ")),
      fact("Tools", model.features.tool_calling ? "yes" : "no"),
      fact("Launch", model.lifecycle.launch),
      fact("Provider", `${model.origin.provider} (${model.origin.license})`),
    ),
  );
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

function backendsTable(rows) {
  return table(
    [
      { label: "Model", cell: (b) => h("code", {}, b.model) },
      { label: "Engine", cell: (b) => b.engine ?? "—" },
      { label: "Ready", cell: (b) => (b.ready ? badge("ready", "ok") : badge("not ready", "bad")) },
      { label: "Queued", cell: (b) => formatNumber(b.queued) },
      { label: "Running", cell: (b) => formatNumber(b.running) },
      { label: "Slots", cell: (b) => b.slots ?? "—" },
      {
        label: "Replicas",
        cell: (b) =>
          (b.replicas || []).length
            ? h(
                "ul",
                { class: "replicas" },
                b.replicas.map((r) => h("li", {}, r.healthy ? badge("healthy", "ok") : badge("down", "bad"), " ", h("code", {}, r.url), ` · ${r.outstanding} outstanding`)),
              )
            : "embedded",
      },
    ],
    rows,
    { empty: "No backends." },
  );
}

export async function render(root) {
  const backends = h("section", { id: "backends" });
  const cards = h("div", { class: "model-grid", id: "model-list" });
  root.append(h("h1", {}, "Models"), cards);
  if (session.isAdmin) root.append(h("h2", {}, "Backends and replicas"), backends);
  try {
    cards.replaceChildren(...(await loadCatalog()).map(modelCard));
  } catch (error) {
    showError(cards, error);
  }
  if (!session.isAdmin) return;
  const refresh = async () => {
    try {
      backends.replaceChildren(backendsTable((await getJSON("/admin/v1/backends")).data));
    } catch (error) {
      showError(backends, error);
    }
  };
  await refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}
