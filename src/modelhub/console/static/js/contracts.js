// Contracts and keys (admin): create, set limits, suspend and resume; create, revoke keys.

import { getJSON, sendJSON, session } from "./api.js";
import { badge, formatDate, h, showError, table } from "./dom.js";

const LIMITS = [
  ["rps", "Requests/s", "0.1"],
  ["burst", "Burst", "1"],
  ["rpm", "Requests/min", "1"],
  ["tpm", "Tokens/min", "1"],
  ["max_running", "Running sequences", "1"],
];

const enc = encodeURIComponent;

export async function render(root) {
  const list = h("div", { id: "contract-list" });
  const newKey = h("div", { id: "new-key-slot" });
  const page = { list, newKey, refresh: null };
  page.refresh = async () => {
    try {
      const contracts = (await getJSON("/admin/v1/contracts")).data;
      list.replaceChildren(...(await Promise.all(contracts.map((c) => contractCard(c, page)))));
      if (!contracts.length) list.replaceChildren(h("p", { class: "muted" }, "No contracts yet."));
    } catch (error) {
      showError(list, error);
    }
  };
  root.append(h("h1", {}, "Contracts and keys"), newKey, createForm(page), list);
  await page.refresh();
}

// Inputs for a contract's limits, models and prices; value() is the API's body.
function contractFields(contract = {}) {
  const limits = contract.limits || {};
  const inputs = Object.fromEntries(
    LIMITS.map(([name, , step]) => [name, h("input", { type: "number", min: 0, step, name, value: limits[name] ?? "", placeholder: "no limit" })]),
  );
  const models = h("input", { name: "models", value: (contract.models || []).join(", "), placeholder: "all models" });
  const prices = h("textarea", {
    name: "prices",
    rows: 2,
    class: "code",
    placeholder: '{"model-id": {"input_per_million": 0.1, "output_per_million": 0.3}}',
  });
  prices.value = contract.prices && Object.keys(contract.prices).length ? JSON.stringify(contract.prices) : "";
  const el = h(
    "div",
    { class: "limits-form" },
    LIMITS.map(([name, label]) => h("label", { class: "field" }, h("span", {}, label), inputs[name])),
    h("label", { class: "field wide" }, h("span", {}, "Models (comma-separated)"), models),
    h("label", { class: "field wide" }, h("span", {}, "Prices (JSON, per million tokens)"), prices),
  );
  const value = () => {
    const body = {
      limits: Object.fromEntries(LIMITS.map(([name]) => [name, inputs[name].value === "" ? null : Number(inputs[name].value)])),
      models: models.value.trim() ? models.value.split(",").map((m) => m.trim()).filter(Boolean) : null,
    };
    if (prices.value.trim()) body.prices = JSON.parse(prices.value);
    return body;
  };
  return { el, value };
}

function createForm(page) {
  const name = h("input", { id: "contract-name", name: "name", required: true, placeholder: "team-a" });
  const fields = contractFields();
  const message = h("div");
  const form = h(
    "form",
    {
      class: "card",
      id: "create-contract",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await sendJSON("POST", "/admin/v1/contracts", { name: name.value.trim(), ...fields.value() });
        } catch (error) {
          return showError(message, error);
        }
        form.reset();
        message.replaceChildren();
        await page.refresh();
      },
    },
    h("details", {}, h("summary", {}, "New contract"), h("label", { class: "field" }, h("span", {}, "Name"), name), fields.el, h("button", { type: "submit" }, "Create contract"), message),
  );
  return form;
}

function limitsSummary(limits) {
  const set = LIMITS.filter(([name]) => limits[name] !== null && limits[name] !== undefined);
  if (!set.length) return "no limits";
  return set.map(([name, label]) => `${label} ${limits[name]}`).join(" · ");
}

async function contractCard(contract, page) {
  const body = h("div");
  const message = h("div");
  const act = async (fn) => {
    try {
      await fn();
      await page.refresh();
    } catch (error) {
      showError(message, error);
    }
  };
  const path = `/admin/v1/contracts/${enc(contract.name)}`;
  const suspended = contract.status === "suspended";
  const edit = () => {
    const fields = contractFields(contract);
    body.replaceChildren(
      h(
        "form",
        { class: "edit-limits", onsubmit: (e) => { e.preventDefault(); act(() => sendJSON("PATCH", path, fields.value())); } },
        fields.el,
        h("button", { type: "submit" }, "Save"),
        h("button", { type: "button", class: "secondary", onclick: () => page.refresh() }, "Cancel"),
      ),
    );
  };
  body.append(
    h("p", { class: "limits" }, limitsSummary(contract.limits || {})),
    h("p", { class: "muted" }, contract.models ? `Models: ${contract.models.join(", ")}` : "All models"),
  );
  const keys = await keysSection(contract, page, act);
  return h(
    "article",
    { class: "card contract", dataset: { contract: contract.name } },
    h(
      "header",
      {},
      h("h2", {}, contract.name),
      badge(contract.status, suspended ? "bad" : "ok"),
      h("span", { class: "spacer" }),
      h("button", { type: "button", class: "secondary", onclick: edit }, "Edit limits"),
      h(
        "button",
        { type: "button", class: "secondary", onclick: () => act(() => sendJSON("POST", `${path}/${suspended ? "resume" : "suspend"}`)) },
        suspended ? "Resume" : "Suspend",
      ),
    ),
    body,
    keys,
    message,
  );
}

async function keysSection(contract, page, act) {
  const path = `/admin/v1/contracts/${enc(contract.name)}/keys`;
  const keys = (await getJSON(path)).data;
  const name = h("input", { name: "key-name", placeholder: "key name", required: true });
  const rows = table(
    [
      { label: "Name", cell: (k) => k.name },
      { label: "Prefix", cell: (k) => h("code", {}, k.prefix) },
      { label: "Created", cell: (k) => formatDate(k.created_at) },
      { label: "Last used", cell: (k) => formatDate(k.last_used_at) },
      {
        label: "",
        cell: (k) =>
          k.revoked_at
            ? badge(`revoked ${formatDate(k.revoked_at)}`, "bad")
            : h("button", { type: "button", class: "danger", onclick: () => confirm(`Revoke ${k.prefix}…?`) && act(() => sendJSON("DELETE", `/admin/v1/keys/${enc(k.id)}`)) }, "Revoke"),
      },
    ],
    keys,
    { empty: "No keys." },
  );
  return h(
    "section",
    { class: "keys" },
    h("h3", {}, "Keys"),
    rows,
    h(
      "form",
      {
        class: "row create-key",
        onsubmit: async (event) => {
          event.preventDefault();
          let created = null;
          await act(async () => {
            created = await sendJSON("POST", path, { name: name.value.trim() });
          });
          // Shown once the list is redrawn: a redraw still under way would otherwise
          // replace a card the user has already started editing.
          if (created) showNewKey(page.newKey, created);
        },
      },
      name,
      h("button", { type: "submit" }, "Create key"),
    ),
  );
}

// The secret is in this panel only: the hub keeps a hash and cannot show it again.
function showNewKey(slot, created) {
  const copied = h("span", { class: "muted" });
  slot.replaceChildren(
    h(
      "div",
      { class: "card new-key", role: "status" },
      h("strong", {}, `New key for ${created.contract}: copy it now, it is shown only once.`),
      h("div", { class: "row" }, h("code", { id: "new-key" }, created.key)),
      h(
        "div",
        { class: "row" },
        h(
          "button",
          {
            type: "button",
            id: "copy-key",
            onclick: async () => {
              await navigator.clipboard.writeText(created.key);
              copied.textContent = "Copied.";
            },
          },
          "Copy",
        ),
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            id: "use-key",
            onclick: () => {
              session.playgroundKey = created.key;
              location.hash = "#/playground";
            },
          },
          "Use in playground",
        ),
        h("button", { type: "button", class: "secondary", onclick: () => slot.replaceChildren() }, "Done"),
        copied,
      ),
    ),
  );
}
