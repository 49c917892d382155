// The console's shell: sign-in, the navigation bar, and one page module per #/route.

import { ApiError, call, session } from "./api.js";
import { h, showError } from "./dom.js";
import * as contracts from "./contracts.js";
import * as models from "./models.js";
import * as playground from "./playground.js";
import * as status from "./status.js";
import * as usage from "./usage.js";

const PAGES = { playground, models, contracts, usage, status };
const ADMIN_ONLY = new Set(["contracts", "status"]);
const main = document.getElementById("main");
const topbar = document.querySelector(".topbar");
let leave = null; // the current page's clean-up (stops its polling)

function pageName() {
  const name = location.hash.replace(/^#\/?/, "").split("?")[0];
  return name in PAGES ? name : "playground";
}

async function route() {
  if (leave) leave();
  leave = null;
  if (session.role === null) return signIn();
  let name = pageName();
  if (ADMIN_ONLY.has(name) && !session.isAdmin) name = "playground";
  topbar.hidden = false;
  for (const link of topbar.querySelectorAll("nav a")) {
    link.hidden = link.hasAttribute("data-admin") && !session.isAdmin;
    link.classList.toggle("active", link.dataset.page === name);
  }
  document.getElementById("who").textContent = {
    admin: "admin",
    tenant: "API key",
    open: "auth off",
  }[session.role];
  main.replaceChildren();
  main.dataset.page = name;
  try {
    leave = (await PAGES[name].render(main)) || null;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return signOut();
    showError(main, error, { replace: false });
  }
}

// Accepts a token the hub knows: an admin token must open the admin API, a key /v1/models.
async function check(token) {
  await call(token.startsWith("mha-") ? "/admin/v1/contracts" : "/v1/models", { token });
}

async function authIsOff() {
  try {
    await call("/v1/models", { token: "" });
    return true;
  } catch {
    return false;
  }
}

function signIn() {
  topbar.hidden = true;
  const input = h("input", {
    type: "password",
    id: "token",
    name: "token",
    autocomplete: "off",
    placeholder: "mha-… or mh-…",
    required: true,
  });
  const message = h("div");
  const form = h(
    "form",
    {
      class: "card sign-in",
      onsubmit: async (event) => {
        event.preventDefault();
        const token = input.value.trim();
        try {
          await check(token);
        } catch (error) {
          return showError(message, error);
        }
        session.token = token;
        route();
      },
    },
    h("h1", {}, "modelhub console"),
    h("label", { for: "token" }, "Admin token or API key"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    message,
    h(
      "p",
      { class: "muted" },
      "An admin token (mha-…) manages contracts, keys and the hub; an API key (mh-…) sees its own " +
        "contract. The token stays in this tab only.",
    ),
  );
  main.replaceChildren(form);
  main.dataset.page = "sign-in";
  authIsOff().then((off) => {
    if (!off) return;
    form.append(
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: () => {
            session.token = "";
            route();
          },
        },
        "Continue without a token (this hub runs with auth off)",
      ),
    );
  });
  input.focus();
}

function signOut() {
  session.signOut();
  location.hash = "";
  route();
}

document.getElementById("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
