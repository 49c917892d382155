// The playground: chat with a catalog model, streamed, with images, tools and JSON mode.

import { ApiError, call, getJSON, session, sendJSON, sseEvents } from "./api.js";
import { loadCatalog } from "./models.js";
import { formatCost, formatNumber, h, showError } from "./dom.js";

const TOOLS_EXAMPLE = JSON.stringify(
  [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "The current weather in a city",
        parameters: {
          type: "object",
          properties: { city: { type: "string", maxLength: 24 } },
          required: ["city"],
        },
      },
    },
  ],
  null,
  2,
);

const NEEDS_KEY = "The playground calls the API as a tenant: paste an API key (mh-…) above, or create one under Contracts & keys.";

// An admin token opens the admin API only; chat and /tokenize take a tenant's key.
const needsKey = () => session.role === "admin" && !session.playgroundKey;

export async function render(root) {
  const ui = layout();
  root.append(ui.page);
  const chat = new Chat(ui);
  await chat.loadModels();
  return () => chat.abort();
}

function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", {}, label), control, hint && h("small", { class: "muted" }, hint));
}

function layout() {
  const ui = {
    model: h("select", { id: "model", name: "model" }),
    key: h("input", {
      id: "playground-key",
      type: "password",
      autocomplete: "off",
      placeholder: "mh-…",
      value: session.playgroundKey,
    }),
    system: h("textarea", { id: "system", rows: 3, placeholder: "You are a helpful assistant." }),
    maxTokens: h("input", { id: "max-tokens", type: "number", min: 1, value: "256" }),
    temperature: h("input", { id: "temperature", type: "number", min: 0, max: 2, step: 0.1, value: "0.7" }),
    jsonMode: h("input", { id: "json-mode", type: "checkbox" }),
    tools: h("textarea", { id: "tools", rows: 10, class: "code", placeholder: TOOLS_EXAMPLE, spellcheck: false }),
    toolChoice: h("select", { id: "tool-choice" }, ["auto", "required", "none"].map((c) => h("option", { value: c }, c))),
    toolsError: h("small", { class: "error", id: "tools-error" }),
    transcript: h("div", { id: "transcript", class: "transcript", "aria-live": "polite" }),
    attachments: h("div", { id: "attachments", class: "attachments" }),
    prompt: h("textarea", { id: "prompt", rows: 3, placeholder: "Message… (Enter sends; paste or attach an image)" }),
    imageInput: h("input", { id: "image-input", type: "file", accept: "image/*", multiple: true }),
    tokenCount: h("span", { id: "token-count", class: "muted" }),
    send: h("button", { id: "send", type: "submit" }, "Send"),
    stop: h("button", { id: "stop", type: "button", class: "secondary", hidden: true }, "Stop"),
    clear: h("button", { id: "new-chat", type: "button", class: "secondary" }, "New chat"),
  };
  ui.composer = h(
    "form",
    { id: "composer", class: "composer" },
    ui.attachments,
    ui.prompt,
    h(
      "div",
      { class: "row" },
      h("label", { class: "button secondary file", id: "attach" }, "Attach image", ui.imageInput),
      ui.tokenCount,
      h("span", { class: "spacer" }),
      ui.stop,
      ui.send,
    ),
  );
  const keyField = session.role === "admin"
    ? field("API key", ui.key, "Chat runs as the tenant whose key this is.")
    : null;
  ui.page = h(
    "section",
    { class: "playground" },
    h(
      "aside",
      { class: "card settings" },
      field("Model", ui.model),
      keyField,
      field("System prompt", ui.system),
      h("div", { class: "row" }, field("Max tokens", ui.maxTokens), field("Temperature", ui.temperature)),
      h("label", { class: "check" }, ui.jsonMode, "JSON mode (response_format json_object)"),
      h(
        "details",
        { id: "tools-editor" },
        h("summary", {}, "Tools (JSON)"),
        ui.tools,
        ui.toolsError,
        field("tool_choice", ui.toolChoice),
      ),
      ui.clear,
    ),
    h("div", { class: "chat card" }, ui.transcript, ui.composer),
  );
  return ui;
}

class Chat {
  constructor(ui) {
    this.ui = ui;
    this.models = new Map();
    this.history = []; // the conversation so far, without the system prompt
    this.images = []; // data: URLs waiting to be sent with the next message
    this.controller = null;
    this.countTimer = null;
    this.countSeq = 0;
    this.wire();
  }

  wire() {
    const ui = this.ui;
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendMessage();
    });
    ui.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.sendMessage();
      }
    });
    ui.prompt.addEventListener("paste", (event) => {
      const files = [...event.clipboardData.files].filter((f) => f.type.startsWith("image/"));
      if (files.length) {
        event.preventDefault();
        this.addImages(files);
      }
    });
    ui.imageInput.addEventListener("change", () => {
      this.addImages([...ui.imageInput.files]);
      ui.imageInput.value = "";
    });
    ui.key.addEventListener("change", () => {
      session.playgroundKey = ui.key.value.trim();
      this.scheduleCount();
    });
    ui.stop.addEventListener("click", () => this.abort());
    ui.clear.addEventListener("click", () => {
      this.abort();
      this.history = [];
      this.images = [];
      ui.transcript.replaceChildren();
      this.showAttachments();
    });
    ui.model.addEventListener("change", () => this.modelChanged());
    for (const el of [ui.prompt, ui.system, ui.tools]) el.addEventListener("input", () => this.scheduleCount());
  }

  // The catalog's models that are served here; retired or unserved ones are listed, disabled.
  async loadModels() {
    const { model } = this.ui;
    const previous = model.value;
    try {
      const data = await loadCatalog();
      this.models = new Map(data.map((m) => [m.id, m]));
      model.replaceChildren(
        ...data.map((m) => {
          const usable = m.availability.available && m.lifecycle.status !== "retired" && m.lifecycle.status !== "upcoming";
          const note = m.lifecycle.status === "deprecated" ? " (deprecated)" : usable ? "" : ` (${m.availability.available ? m.lifecycle.status : "not served"})`;
          return h("option", { value: m.id, disabled: !usable }, m.name + note);
        }),
      );
      const first = data.find((m) => m.id === previous && m.availability.available) || data.find((m) => m.availability.available);
      if (first) model.value = first.id;
      this.modelChanged();
    } catch (error) {
      showError(this.ui.transcript, error);
    }
  }

  modelChanged() {
    const card = this.models.get(this.ui.model.value);
    const images = !!card && card.modalities.input.includes("image");
    this.ui.imageInput.disabled = !images;
    document.getElementById("attach")?.classList.toggle("disabled", !images);
    this.ui.page.querySelector("#attach").title = images ? "" : "This model takes text only.";
    this.scheduleCount();
  }

  async addImages(files) {
    const card = this.models.get(this.ui.model.value);
    if (!card || !card.modalities.input.includes("image")) {
      this.ui.tokenCount.textContent = "This model takes text only.";
      return;
    }
    for (const file of files) {
      this.images.push(await readAsDataURL(file));
    }
    this.showAttachments();
    this.scheduleCount();
  }

  showAttachments() {
    this.ui.attachments.replaceChildren(
      ...this.images.map((url, i) =>
        h(
          "figure",
          { class: "thumb" },
          h("img", { src: url, alt: `image ${i + 1}` }),
          h(
            "button",
            {
              type: "button",
              class: "remove",
              title: "Remove",
              onclick: () => {
                this.images.splice(i, 1);
                this.showAttachments();
                this.scheduleCount();
              },
            },
            "×",
          ),
        ),
      ),
    );
  }

  tools() {
    const text = this.ui.tools.value.trim();
    this.ui.toolsError.textContent = "";
    if (!text) return null;
    try {
      const tools = JSON.parse(text);
      if (!Array.isArray(tools)) throw new Error("Tools must be a JSON array.");
      return tools;
    } catch (error) {
      this.ui.toolsError.textContent = error.message;
      throw error;
    }
  }

  // The user's message being composed, as OpenAI content parts when there are images.
  pendingMessage() {
    const text = this.ui.prompt.value;
    if (!this.images.length) return text.trim() ? { role: "user", content: text } : null;
    const parts = text.trim() ? [{ type: "text", text }] : [];
    for (const url of this.images) parts.push({ type: "image_url", image_url: { url } });
    return { role: "user", content: parts };
  }

  messages(extra = []) {
    const system = this.ui.system.value.trim();
    return [...(system ? [{ role: "system", content: system }] : []), ...this.history, ...extra];
  }

  scheduleCount() {
    clearTimeout(this.countTimer);
    this.countTimer = setTimeout(() => this.count(), 300);
  }

  // The exact prompt token count of what Send would send, from the hub's /tokenize.
  async count() {
    const pending = this.pendingMessage();
    const out = this.ui.tokenCount;
    if (!pending || !this.ui.model.value) {
      out.textContent = "";
      return;
    }
    let tools;
    try {
      tools = this.tools();
    } catch {
      return;
    }
    if (needsKey()) {
      out.textContent = NEEDS_KEY;
      return;
    }
    const seq = ++this.countSeq;
    out.textContent = "counting…";
    try {
      const body = { model: this.ui.model.value, messages: this.messages([pending]) };
      if (tools) body.tools = tools;
      const result = await sendJSON("POST", "/tokenize", body, { token: session.playgroundKey });
      if (seq !== this.countSeq) return;
      const images = result.image_tokens ? ` (${formatNumber(result.image_tokens)} image)` : "";
      out.textContent = `${formatNumber(result.count)} prompt tokens${images}`;
      out.dataset.count = result.count;
    } catch (error) {
      if (seq === this.countSeq) out.textContent = `Cannot count: ${error.message}`;
    }
  }

  sendMessage() {
    if (this.controller) return;
    const pending = this.pendingMessage();
    if (!pending) return;
    this.ui.transcript.append(userBubble(pending));
    this.history.push(pending);
    this.ui.prompt.value = "";
    this.images = [];
    this.showAttachments();
    this.ui.tokenCount.textContent = "";
    this.generate();
  }

  async generate() {
    const ui = this.ui;
    const reply = new Reply(ui.transcript);
    if (needsKey()) {
      reply.fail(new Error(NEEDS_KEY));
      this.history.pop();
      return;
    }
    const body = {
      model: ui.model.value,
      messages: this.messages(),
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: Number(ui.maxTokens.value) || undefined,
      temperature: Number(ui.temperature.value),
    };
    try {
      const tools = this.tools();
      if (tools) Object.assign(body, { tools, tool_choice: ui.toolChoice.value });
    } catch (error) {
      reply.fail(error);
      this.history.pop();
      return;
    }
    if (ui.jsonMode.checked) body.response_format = { type: "json_object" };
    this.controller = new AbortController();
    ui.send.disabled = true;
    ui.stop.hidden = false;
    const sentAt = performance.now();
    const before = await ledgerTotals();
    try {
      const response = await call("/v1/chat/completions", {
        method: "POST",
        body,
        token: session.playgroundKey,
        signal: this.controller.signal,
      });
      for await (const chunk of sseEvents(response)) {
        if (chunk.error) throw new ApiError(500, chunk.error);
        reply.add(chunk);
      }
      reply.done(performance.now() - sentAt);
      reply.showCost(before, await ledgerTotalsAfter(before));
      this.history.push(reply.message());
      if (reply.toolCalls.length) reply.askForResults((results) => this.continueWith(results));
    } catch (error) {
      if (error.name === "AbortError") reply.done(performance.now() - sentAt, "stopped");
      else {
        reply.fail(error);
        if (!reply.content && !reply.toolCalls.length) this.history.pop();
      }
      if (reply.content) this.history.push(reply.message());
    } finally {
      this.controller = null;
      ui.send.disabled = false;
      ui.stop.hidden = true;
    }
  }

  continueWith(results) {
    this.history.push(...results);
    this.generate();
  }

  abort() {
    if (this.controller) this.controller.abort();
  }
}

// The contract's ledger totals: the difference across one reply is what it was billed.
async function ledgerTotals() {
  try {
    const rows = await getJSON("/v1/usage", { token: session.playgroundKey });
    return rows[0] || { requests: 0, cost: 0 };
  } catch {
    return null;
  }
}

// The totals once the reply's row is in; a hub may write it a moment after the last byte.
async function ledgerTotalsAfter(before) {
  let after = await ledgerTotals();
  for (let i = 0; i < 10 && before && after && after.requests === before.requests; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    after = await ledgerTotals();
  }
  return after;
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function userBubble(message) {
  const parts = typeof message.content === "string" ? [{ type: "text", text: message.content }] : message.content;
  return h(
    "div",
    { class: "message user" },
    parts.map((p) => (p.type === "text" ? h("div", { class: "text" }, p.text) : h("img", { class: "sent-image", src: p.image_url.url, alt: "image" }))),
  );
}

// One assistant reply as it streams in: its text, its tool calls, then usage and cost.
class Reply {
  constructor(transcript) {
    this.content = "";
    this.toolCalls = [];
    this.usage = null;
    this.finishReason = null;
    this.text = h("div", { class: "text" });
    this.calls = h("div", { class: "tool-calls" });
    this.meta = h("div", { class: "meta muted" }, "…");
    this.el = h("div", { class: "message assistant streaming" }, this.text, this.calls, this.meta);
    transcript.append(this.el);
    this.transcript = transcript;
  }

  add(chunk) {
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      if (delta.content) {
        this.content += delta.content;
        this.text.textContent = this.content;
      }
      for (const call of delta.tool_calls || []) {
        const slot = (this.toolCalls[call.index ?? 0] ||= { id: "", type: "function", function: { name: "", arguments: "" } });
        if (call.id) slot.id = call.id;
        if (call.function?.name) slot.function.name += call.function.name;
        if (call.function?.arguments) slot.function.arguments += call.function.arguments;
      }
      if (delta.tool_calls) this.showCalls();
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
    }
    this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  showCalls() {
    this.calls.replaceChildren(
      ...this.toolCalls.map((c) =>
        h(
          "div",
          { class: "tool-call" },
          h("div", { class: "tool-call-head" }, h("span", { class: "badge tool" }, "tool call"), h("code", {}, c.function.name), h("small", { class: "muted" }, c.id)),
          h("pre", { class: "code" }, prettyJSON(c.function.arguments)),
        ),
      ),
    );
  }

  message() {
    const message = { role: "assistant", content: this.content || null };
    if (this.toolCalls.length) message.tool_calls = this.toolCalls;
    return message;
  }

  done(elapsedMs, note) {
    this.el.classList.remove("streaming");
    const u = this.usage;
    const parts = [];
    if (u) {
      parts.push(`prompt ${formatNumber(u.prompt_tokens)}`, `completion ${formatNumber(u.completion_tokens)}`, `total ${formatNumber(u.total_tokens)}`);
    }
    if (this.finishReason) parts.push(`finish ${this.finishReason}`);
    if (note) parts.push(note);
    parts.push(`${(elapsedMs / 1000).toFixed(1)} s`);
    this.meta.textContent = parts.join(" · ");
    this.meta.classList.add("usage");
  }

  // The cost the ledger recorded, when exactly this one request ran between the two reads.
  showCost(before, after) {
    const cost = h("span", { class: "cost" });
    if (before && after && after.requests - before.requests === 1) {
      cost.textContent = ` · cost ${formatCost(after.cost - before.cost)}`;
      cost.dataset.cost = after.cost - before.cost;
    } else if (before && after) {
      cost.textContent = " · cost n/a (other requests of this contract ran meanwhile)";
    }
    this.meta.append(cost);
  }

  fail(error) {
    this.el.classList.remove("streaming");
    this.el.classList.add("failed");
    this.meta.replaceChildren();
    showError(this.meta, error);
  }

  // A form with one result per tool call; submitting continues the conversation.
  askForResults(submit) {
    const inputs = this.toolCalls.map((c) => h("input", { class: "tool-result", placeholder: `result of ${c.function.name}`, "aria-label": `result of ${c.function.name}` }));
    const form = h(
      "form",
      {
        class: "tool-results",
        onsubmit: (event) => {
          event.preventDefault();
          form.remove();
          submit(this.toolCalls.map((c, i) => ({ role: "tool", tool_call_id: c.id, content: inputs[i].value })));
        },
      },
      inputs,
      h("button", { type: "submit", class: "secondary" }, "Send tool results"),
    );
    this.el.append(form);
  }
}

function prettyJSON(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
