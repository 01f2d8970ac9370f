// attn's page: a chat playground over /v1/chat/completions (streamed) and
// an inspector over /v1/attention. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("attn-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("attn-api-key", keyInput.value));

function headers() {
  const h = { "Content-Type": "application/json" };
  if (keyInput.value) h["Authorization"] = "Bearer " + keyInput.value;
  return h;
}

async function errorText(resp) {
  try {
    const j = await resp.json();
    return (j.error && j.error.message) || resp.statusText;
  } catch (_) {
    return resp.status + " " + resp.statusText;
  }
}

// Tabs
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + tab.dataset.view;
  });
}

async function showModel() {
  for (;;) {
    try {
      const r = await fetch("/health");
      const j = await r.json();
      if (r.ok) {
        $("model-name").textContent = j.model + " · context " + j.context + " · " + j.slots_total + " slots";
        return;
      }
      $("model-name").textContent = j.status === "loading" ? "loading the model…" : "error: " + j.message;
      if (j.status !== "loading") return;
    } catch (_) {
      $("model-name").textContent = "server unreachable";
    }
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}
showModel();

// ---- Chat ----
let history = [];
let controller = null;

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const body = document.createElement("span");
  body.className = "content";
  body.textContent = text;
  div.appendChild(body);
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

function num(id) {
  const v = $(id).value;
  return v === "" ? undefined : Number(v);
}

async function send(text) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  history.push({ role: "user", content: text });
  messages.push(...history);
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  const content = reply.querySelector(".content");
  const body = {
    messages, stream: true, stream_options: { include_usage: true },
    temperature: num("temperature"), top_p: num("top-p"), top_k: num("top-k"), max_tokens: num("max-tokens"), seed: num("seed"),
  };
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const t0 = performance.now();
  let tFirst = null, usage = null, finish = null, chunks = 0;
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!resp.ok) throw new Error(await errorText(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const j = JSON.parse(data);
          if (j.error) throw new Error(j.error.message);
          if (j.usage) usage = j.usage;
          for (const c of j.choices) {
            if (c.delta && c.delta.content) {
              if (tFirst === null) tFirst = performance.now();
              content.textContent += c.delta.content;
              chunks++;
              $("messages").scrollTop = $("messages").scrollHeight;
            }
            if (c.finish_reason) finish = c.finish_reason;
          }
        }
      }
    }
    history.push({ role: "assistant", content: content.textContent });
  } catch (e) {
    if (e.name === "AbortError") {
      history.push({ role: "assistant", content: content.textContent });
      finish = "stopped";
    } else {
      reply.className = "msg error";
      content.textContent = "error: " + e.message;
      history.pop();
    }
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
  const t1 = performance.now();
  const meta = document.createElement("span");
  meta.className = "meta";
  const parts = [];
  if (usage) {
    parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens");
    if (tFirst !== null && usage.completion_tokens > 1) {
      parts.push(((usage.completion_tokens - 1) / ((t1 - tFirst) / 1000)).toFixed(1) + " tok/s");
    }
  }
  if (tFirst !== null) parts.push("first token " + ((tFirst - t0) / 1000).toFixed(2) + " s");
  if (finish) parts.push(finish);
  meta.textContent = parts.join(" · ");
  reply.appendChild(meta);
  $("chat-stats").textContent = meta.textContent;
}

$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || controller) return;
  $("chat-input").value = "";
  send(text);
});
$("chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("chat-form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => {
  history = [];
  $("messages").textContent = "";
  $("chat-stats").textContent = "";
});

// ---- Inspector ----
let trace = null;

function fill(select, n, label) {
  const keep = select.value;
  select.textContent = "";
  for (let i = 0; i < n; i++) {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = label + " " + i;
    select.appendChild(o);
  }
  if (keep !== "" && Number(keep) < n) select.value = keep;
}

// A token as text: escapes for control characters, a middle dot for each
// space so that leading spaces show.
function shown(tok) {
  return JSON.stringify(tok).slice(1, -1).replace(/ /g, "\u00b7");
}

function drawHeatmap() {
  const table = $("heatmap");
  table.textContent = "";
  if (!trace) return;
  const l = Number($("layer").value), h = Number($("head").value);
  const map = trace.attention[l][h];
  const toks = trace.tokens.map(shown);
  $("heatmap-title").textContent = "Attention · layer " + l + " · head " + h;
  const thead = table.createTHead().insertRow();
  thead.appendChild(document.createElement("th"));
  for (const t of toks) {
    const th = document.createElement("th");
    th.textContent = t;
    thead.appendChild(th);
  }
  const tbody = table.createTBody();
  map.forEach((row, q) => {
    const tr = tbody.insertRow();
    tr.className = "hm-row";
    const th = document.createElement("th");
    th.textContent = toks[q];
    tr.appendChild(th);
    row.forEach((p, k) => {
      const td = tr.insertCell();
      const a = Math.sqrt(p);
      td.style.background = "rgba(29, 62, 160, " + a.toFixed(3) + ")";
      td.title = toks[q] + " → " + toks[k] + ": " + p.toFixed(4);
    });
  });
}

function drawNext() {
  const box = $("next-token");
  box.textContent = "";
  if (!trace) return;
  const nt = trace.next_token;
  const top = Math.max(...nt.candidates.map((c) => Math.max(c.prob, c.filtered_prob)), 1e-9);
  for (const c of nt.candidates) {
    const row = document.createElement("div");
    row.className = "bar-row";
    const tok = document.createElement("span");
    tok.className = "tok";
    tok.textContent = shown(c.token);
    const bar = document.createElement("div");
    bar.className = "bar";
    const raw = document.createElement("div");
    raw.className = "raw";
    raw.style.width = (100 * c.prob / top).toFixed(1) + "%";
    const filt = document.createElement("div");
    filt.className = "filtered";
    filt.style.width = (100 * c.filtered_prob / top).toFixed(1) + "%";
    bar.append(raw, filt);
    const p = document.createElement("span");
    p.textContent = (100 * c.prob).toFixed(1) + "%";
    row.append(tok, bar, p);
    box.appendChild(row);
  }
  $("entropy").textContent = "entropy " + nt.entropy.toFixed(2) + " bits; after the filters " + nt.filtered_entropy.toFixed(2) + " bits over " + nt.kept + " tokens";
}

async function inspect() {
  $("inspect-error").textContent = "";
  const body = { text: $("inspect-text").value, top: 12, temperature: num("i-temperature"), top_k: num("i-top-k"), top_p: num("i-top-p") };
  const resp = await fetch("/v1/attention", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!resp.ok) {
    $("inspect-error").textContent = "error: " + (await errorText(resp));
    return;
  }
  trace = await resp.json();
  fill($("layer"), trace.n_layer, "layer");
  fill($("head"), trace.n_head, "head");
  drawHeatmap();
  drawNext();
  document.body.dataset.inspected = String(trace.tokens.length);
}

$("inspect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  inspect();
});
$("layer").addEventListener("change", drawHeatmap);
$("head").addEventListener("change", drawHeatmap);
for (const id of ["i-temperature", "i-top-k", "i-top-p"]) $(id).addEventListener("change", () => trace && inspect());
