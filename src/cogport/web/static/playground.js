// cogport playground: the model form, a run's live view, copy-as snippets, the instances table.
// Every action is a call to this server's /v1 API, signed in by the session cookie (same origin).
// The DOM is built with textContent only: model outputs and logs are never parsed as HTML.
"use strict";

(function () {
  const TERMINAL = new Set(["succeeded", "failed", "canceled", "aborted"]);
  const IMAGE = /\.(png|jpe?g|gif|webp|bmp|svg|avif)$/i;
  const AUDIO = /\.(wav|mp3|ogg|oga|flac|m4a|aac|opus)$/i;
  const VIDEO = /\.(mp4|webm|mov|m4v|ogv)$/i;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  async function api(method, path, body, headers) {
    const options = { method, credentials: "same-origin", headers: Object.assign({}, headers || {}) };
    if (body instanceof FormData) options.body = body;
    else if (body !== undefined) {
      options.body = JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, options);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      const detail = data && (data.detail || data.title);
      const error = new Error(typeof detail === "string" ? detail : `${response.status} ${response.statusText}`);
      error.status = response.status;
      error.problem = data;
      throw error;
    }
    return data;
  }

  function schemaOf(id) {
    const node = document.getElementById(id);
    if (!node) return {};
    try { return JSON.parse(node.textContent || "{}") || {}; } catch (_) { return {}; }
  }

  // ---- outputs ----

  function isFileUrl(value) {
    return typeof value === "string" && /^(https?:\/\/|data:)/i.test(value) && !/\s/.test(value);
  }

  function mediaKind(url) {
    if (url.startsWith("data:")) {
      const type = url.slice(5, url.indexOf(";") > 0 ? url.indexOf(";") : url.indexOf(","));
      return type.split("/")[0];
    }
    let path = url;
    try { path = new URL(url).pathname; } catch (_) { /* keep it */ }
    if (IMAGE.test(path)) return "image";
    if (AUDIO.test(path)) return "audio";
    if (VIDEO.test(path)) return "video";
    return "file";
  }

  function fileName(url, index) {
    if (url.startsWith("data:")) return `output-${index}`;
    try {
      const parts = new URL(url).pathname.split("/");
      return decodeURIComponent(parts[parts.length - 1]) || `output-${index}`;
    } catch (_) { return `output-${index}`; }
  }

  function fileView(url, index) {
    const kind = mediaKind(url);
    const name = fileName(url, index);
    const box = el("figure", { class: "file-output" });
    if (kind === "image") box.append(el("img", { src: url, alt: `Output image ${index + 1}: ${name}` }));
    else if (kind === "audio") box.append(el("audio", { src: url, controls: true, "aria-label": `Output audio ${name}` }));
    else if (kind === "video") box.append(el("video", { src: url, controls: true, "aria-label": `Output video ${name}` }));
    const link = url.startsWith("data:") ? null : el("a", { href: url, download: name, text: `Download ${name}` });
    box.append(el("figcaption", {}, link || el("span", { text: name })));
    return box;
  }

  function isConcatenated(schema) {
    return schema && schema.type === "array" && schema["x-cog-array-display"] === "concatenate";
  }

  function fileSchema(schema) {
    if (!schema) return false;
    if (schema.type === "string" && schema.format === "uri") return true;
    return schema.type === "array" && schema.items && schema.items.format === "uri";
  }

  function outputView(output, schema) {
    if (output === null || output === undefined) return el("p", { class: "help", text: "No output." });
    if (Array.isArray(output)) {
      if (isConcatenated(schema) && output.every((x) => typeof x === "string")) {
        return el("pre", { class: "output-text", text: output.join("") });
      }
      if (fileSchema(schema) || (output.length && output.every(isFileUrl))) {
        return el("div", { class: "file-outputs" }, ...output.map((url, i) => fileView(String(url), i)));
      }
      if (output.every((x) => typeof x === "string")) return el("pre", { class: "output-text", text: output.join("\n") });
    }
    if (typeof output === "string") {
      if ((fileSchema(schema) || !schema.type) && isFileUrl(output)) return fileView(output, 0);
      return el("pre", { class: "output-text", text: output });
    }
    return el("pre", { class: "output-json mono", text: JSON.stringify(output, null, 2) });
  }

  // ---- a run, live ----

  class RunView {
    constructor(root, run, schema, kind, onOwnPage) {
      this.root = root;
      this.onOwnPage = Boolean(onOwnPage);
      this.run = run;
      this.schema = schema || {};
      this.kind = kind || "prediction";
      this.streamed = [];
      this.streamedLogs = null;
      this.source = null;
      this.timer = null;
      this.build();
      this.update(run);
      if (!TERMINAL.has(run.status)) this.follow();
    }

    build() {
      this.root.replaceChildren();
      this.root.hidden = false;
      this.status = el("span", { class: "status", role: "status", "aria-live": "polite" });
      this.cancel = el("button", { type: "button", class: "danger", text: "Cancel" });
      this.cancel.addEventListener("click", () => this.doCancel());
      this.link = this.onOwnPage ? null : el("a", { href: `/p/${this.run.id}`, text: "Open this " + this.kind + "'s page" });
      this.output = el("div", { class: "output", "aria-live": "polite" });
      this.error = el("p", { class: "error", role: "alert", hidden: true });
      this.metrics = el("p", { class: "meta" });
      this.logs = el("pre", { class: "logs mono", tabindex: "0", "aria-label": "Logs" });
      this.root.append(
        el("div", { class: "run-head" }, el("span", { text: "Status: " }), this.status, this.cancel, this.link),
        this.output,
        this.error,
        this.metrics,
        el("h3", { text: "Logs" }),
        this.logs,
      );
    }

    update(run) {
      if (run.status === "starting" && this.run.status === "processing") run = Object.assign({}, run, { status: "processing" });
      this.run = run;
      this.status.textContent = run.status;
      this.status.dataset.status = run.status;
      this.cancel.hidden = TERMINAL.has(run.status);
      if (run.error) { this.error.hidden = false; this.error.textContent = String(run.error); }
      const logs = this.streamedLogs !== null && (run.logs || "").length < this.streamedLogs.length ? this.streamedLogs : run.logs || "";
      this.logs.textContent = logs || "No logs.";
      const m = run.metrics || {};
      const parts = [];
      if (typeof m.predict_time === "number") parts.push(`predict time ${m.predict_time.toFixed(3)} s`);
      if (typeof m.total_time === "number") parts.push(`total ${m.total_time.toFixed(3)} s`);
      this.metrics.textContent = parts.join(" · ");
      if (TERMINAL.has(run.status) || run.output !== null && run.output !== undefined && !this.source) {
        this.output.replaceChildren(outputView(run.output, this.schema));
      }
      if (TERMINAL.has(run.status)) this.stop();
    }

    running() {
      // Output or logs on the stream: the model is at work, whatever the last poll said.
      if (this.run.status === "starting") {
        this.run = Object.assign({}, this.run, { status: "processing" });
        this.status.textContent = "processing";
        this.status.dataset.status = "processing";
      }
    }

    path() {
      return `/v1/${this.kind === "training" ? "trainings" : "predictions"}/${this.run.id}`;
    }

    follow() {
      const stream = this.run.urls && this.run.urls.stream;
      if (stream && typeof EventSource !== "undefined") {
        this.source = new EventSource(stream);
        this.source.addEventListener("output", (event) => {
          this.streamed.push(event.data);
          this.running();
          if (isConcatenated(this.schema) || !fileSchema(this.schema)) {
            this.output.replaceChildren(el("pre", { class: "output-text", text: this.streamed.join(isConcatenated(this.schema) ? "" : "\n") }));
          }
        });
        this.source.addEventListener("logs", (event) => {
          this.running();
          this.streamedLogs = (this.streamedLogs || "") + event.data + "\n";
          this.logs.textContent = this.streamedLogs;
        });
        const end = () => { if (this.source) { this.source.close(); this.source = null; } this.poll(); };
        this.source.addEventListener("done", end);
        this.source.addEventListener("error", (event) => {
          // the stream's own error event (the prediction failed), or a connection the browser gave up on
          if (this.source && (event.data !== undefined || this.source.readyState === EventSource.CLOSED)) end();
        });
      }
      this.timer = setInterval(() => this.poll(), 800);
    }

    async poll() {
      try { this.update(await api("GET", this.path())); } catch (error) { this.showError(error); }
    }

    stop() {
      if (this.timer) { clearInterval(this.timer); this.timer = null; }
      if (this.source) { this.source.close(); this.source = null; }
    }

    async doCancel() {
      this.cancel.disabled = true;
      try { this.update(await api("POST", `${this.path()}/cancel`)); } catch (error) { this.showError(error); }
      this.cancel.disabled = false;
    }

    showError(error) {
      this.error.hidden = false;
      this.error.textContent = error.message;
    }
  }

  // ---- the form ----

  function numberOf(text, kind) {
    return kind === "integer" ? parseInt(text, 10) : parseFloat(text);
  }

  async function upload(file) {
    const body = new FormData();
    body.append("content", file, file.name);
    const stored = await api("POST", "/v1/files", body);
    return stored.urls.get;
  }

  // The input the form describes; files are uploaded (Files API) when `uploadFiles`, else shown as names.
  async function collectInput(form, uploadFiles) {
    const input = {};
    for (const field of form.querySelectorAll(".field[data-field]")) {
      const name = field.dataset.field;
      const kind = field.dataset.kind;
      const control = field.querySelector("input, select, textarea");
      if (!control) continue;
      if (kind === "boolean") { input[name] = control.checked; continue; }
      if (kind === "file" || kind === "files") {
        const files = Array.from(control.files || []);
        if (!files.length) continue;
        const values = uploadFiles ? await Promise.all(files.map(upload)) : files.map((f) => `<upload of ${f.name}>`);
        input[name] = kind === "files" ? values : values[0];
        continue;
      }
      const text = control.value;
      if (text === "" && kind !== "list") continue;
      if (kind === "integer" || kind === "number") {
        const value = numberOf(text, kind);
        if (Number.isNaN(value)) throw new Error(`${name}: "${text}" is not a number`);
        input[name] = value;
      } else if (kind === "select") {
        const type = field.dataset.choiceType;
        input[name] = type === "integer" || type === "number" ? numberOf(text, type) : text;
      } else if (kind === "list") {
        const lines = text.split("\n").map((line) => line.trim()).filter((line) => line !== "");
        const item = field.dataset.itemKind;
        input[name] = item === "integer" || item === "number" ? lines.map((line) => numberOf(line, item)) : lines;
      } else if (kind === "json") {
        try { input[name] = JSON.parse(text); } catch (_) { throw new Error(`${name}: not valid JSON`); }
      } else {
        input[name] = text;
      }
    }
    return input;
  }

  function pythonLiteral(value, indent) {
    const pad = " ".repeat(indent);
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
    if (Array.isArray(value)) return `[${value.map((v) => pythonLiteral(v, indent)).join(", ")}]`;
    const entries = Object.entries(value);
    if (!entries.length) return "{}";
    const inner = entries.map(([k, v]) => `${pad}    ${JSON.stringify(k)}: ${pythonLiteral(v, indent + 4)},`);
    return `{\n${inner.join("\n")}\n${pad}}`;
  }

  function snippets(baseUrl, model, version, input) {
    const body = JSON.stringify({ version, input }, null, 2);
    const ref = `${model}:${version}`;
    return {
      curl: [
        `curl -s -X POST \\`,
        `  -H "Authorization: Bearer $REPLICATE_API_TOKEN" \\`,
        `  -H "Content-Type: application/json" \\`,
        `  -H "Prefer: wait" \\`,
        `  -d '${body.replace(/'/g, "'\\''")}' \\`,
        `  ${baseUrl}/v1/predictions`,
      ].join("\n"),
      python: [
        "import replicate",
        "",
        `client = replicate.Client(base_url=${JSON.stringify(baseUrl)})  # the token from REPLICATE_API_TOKEN`,
        "output = client.run(",
        `    ${JSON.stringify(ref)},`,
        `    input=${pythonLiteral(input, 4)},`,
        ")",
        "print(output)",
      ].join("\n"),
      javascript: [
        'import Replicate from "replicate";',
        "",
        `const replicate = new Replicate({ auth: process.env.REPLICATE_API_TOKEN, baseUrl: ${JSON.stringify(baseUrl + "/v1")} });`,
        `const output = await replicate.run(${JSON.stringify(ref)}, { input: ${JSON.stringify(input, null, 2)} });`,
        "console.log(output);",
      ].join("\n"),
    };
  }

  function showSnippets(form, input) {
    const texts = snippets(form.dataset.baseUrl, form.dataset.model, form.dataset.version, input);
    for (const [lang, text] of Object.entries(texts)) {
      const node = document.getElementById(`snippet-${lang}`);
      if (node) node.textContent = text;
    }
  }

  function setupForm(form) {
    const errorBox = document.getElementById("form-error");
    const view = document.getElementById("run-view");
    const empty = document.getElementById("run-empty");
    const button = document.getElementById("run-button");
    const schema = schemaOf("output-schema");
    let current = null;

    const refresh = async () => {
      try { showSnippets(form, await collectInput(form, false)); } catch (_) { /* shown on Run */ }
    };
    form.addEventListener("input", refresh);
    form.addEventListener("change", refresh);
    refresh();

    const versionSelect = document.getElementById("version-select");
    if (versionSelect) {
      versionSelect.addEventListener("change", () => {
        const url = new URL(window.location.href);
        url.searchParams.set("version", versionSelect.value);
        window.location.assign(url.toString());
      });
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errorBox.hidden = true;
      const missing = Array.from(form.querySelectorAll(".field[data-required]")).filter((field) => {
        const control = field.querySelector("input, select, textarea");
        return control && (control.type === "file" ? !(control.files && control.files.length) : control.value === "");
      });
      if (missing.length) {
        errorBox.textContent = `Required: ${missing.map((f) => f.dataset.field).join(", ")}`;
        errorBox.hidden = false;
        missing[0].querySelector("input, select, textarea").focus();
        return;
      }
      button.disabled = true;
      button.textContent = "Running…";
      try {
        const input = await collectInput(form, true);
        showSnippets(form, input);
        const run = await api("POST", "/v1/predictions", { version: form.dataset.version, input });
        if (current) current.stop();
        if (empty) empty.hidden = true;
        current = new RunView(view, run, schema, "prediction");
      } catch (error) {
        const problems = error.problem && Array.isArray(error.problem.invalid_fields) ? error.problem.invalid_fields : [];
        errorBox.textContent = error.message + problems.map((p) => ` ${p.field || ""}: ${p.description || ""}`).join(";");
        errorBox.hidden = false;
      } finally {
        button.disabled = false;
        button.textContent = "Run";
      }
    });
  }

  function setupCopyButtons() {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      button.addEventListener("click", async () => {
        const target = document.getElementById(button.dataset.copy);
        if (!target) return;
        const label = button.textContent;
        try {
          await navigator.clipboard.writeText(target.textContent);
          button.textContent = "Copied";
        } catch (_) {
          const range = document.createRange();
          range.selectNodeContents(target);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          button.textContent = "Selected: press Ctrl+C";
        }
        setTimeout(() => { button.textContent = label; }, 1500);
      });
    }
  }

  function setupInstances(box) {
    const rows = document.getElementById("instance-rows");
    const queued = document.getElementById("queued");
    const refresh = async () => {
      let data;
      try { data = await api("GET", box.dataset.url); } catch (_) { return; }
      queued.textContent = String(data.queued);
      const lines = data.results.map((i) => el(
        "tr", {},
        el("td", { class: "mono", text: i.id }), el("td", { text: i.state }), el("td", { text: i.hardware }),
        el("td", { text: i.node }), el("td", { text: (i.gpus || []).join(", ") }), el("td", { text: i.started_at || "" }),
      ));
      rows.replaceChildren(...(lines.length ? lines : [el("tr", {}, el("td", { colspan: 6, text: "No instances running." }))]));
    };
    setInterval(refresh, 2000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("run-form");
    if (form) setupForm(form);
    setupCopyButtons();
    const data = document.getElementById("run-data");
    const view = document.getElementById("run-view");
    if (data && view) new RunView(view, JSON.parse(data.textContent), schemaOf("output-schema"), view.dataset.kind, true);
    const instances = document.getElementById("instances");
    if (instances) setupInstances(instances);
  });
})();
