// toolkit's web page: a chat over the server's own POST /v1/chat/completions (streamed as
// SSE), a dashboard polling GET ui/stats, and the configuration from GET ui/config.
// Plain JavaScript, no dependencies. Paths are relative, so the page works under a proxy's
// root_path too.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "toolkit.ui.";        // localStorage prefix of the persisted inputs
const SAMPLING = ["temperature", "top_p", "top_k", "max_tokens", "seed"];
const conversation = [];            // the turns so far, sent with every request
let controller = null;              // aborts the chat request in flight

// ---------------------------------------------------------------- API key and requests

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorMessage(response) {
  const body = await response.json().catch(() => ({}));
  return body.error?.message || `HTTP ${response.status}`;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

function persist(input) {
  const saved = localStorage.getItem(STORE + input.id);
  if (saved !== null) input.value = saved;
  input.addEventListener("input", () => localStorage.setItem(STORE + input.id, input.value));
}

// ---------------------------------------------------------------- chat

function bubble(role, text = "") {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("messages").append(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

function requestBody() {
  const system = $("system").value.trim();
  const body = {
    messages: [...(system ? [{ role: "system", content: system }] : []), ...conversation],
    stream: true,
    stream_options: { include_usage: true },
  };
  for (const name of SAMPLING) {
    const value = $(name).value.trim();
    if (value !== "") body[name] = Number(value);
  }
  const schema = $("schema").value.trim();
  if (schema) {
    let parsed;
    try { parsed = JSON.parse(schema); } catch (e) {
      throw new Error(`The JSON schema is not valid JSON: ${e.message}`);
    }
    body.response_format = { type: "json_schema", json_schema: { name: "ui", schema: parsed } };
  }
  return body;
}

// The JSON payloads of an SSE response, until "data: [DONE]".
async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r/g, "");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, end).split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      buffer = buffer.slice(end + 2);
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  conversation.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant streaming");
  const status = $("chat-status");
  const started = performance.now();
  let answer = "", usage = null, firstToken = null;
  controller = new AbortController();
  setBusy(true);
  status.textContent = "…";
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const piece = chunk.choices?.[0]?.delta?.content;
      if (piece) {
        firstToken ??= performance.now();
        answer += piece;
        out.textContent = answer;
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    }
    conversation.push({ role: "assistant", content: answer });
    status.textContent = summary(usage, started, firstToken);
  } catch (error) {
    if (error.name === "AbortError" && answer) {   // stopped: keep what came
      conversation.push({ role: "assistant", content: answer });
      status.textContent = "stopped";
    } else {
      conversation.pop();                     // the failed turn is not resent
      out.classList.add("error");
      out.textContent = answer ? `${answer}\n\n${error.message}` : error.message;
      status.textContent = "failed";
    }
  } finally {
    out.classList.remove("streaming");
    controller = null;
    setBusy(false);
  }
}

function summary(usage, started, firstToken) {
  const seconds = (performance.now() - started) / 1000;
  const tokens = usage?.completion_tokens ?? 0;
  const ttft = firstToken ? `, first token ${Math.round(firstToken - started)} ms` : "";
  const rate = (tokens / seconds).toFixed(1);
  return `${tokens} tokens in ${seconds.toFixed(2)} s (${rate} tok/s${ttft})`;
}

// ---------------------------------------------------------------- dashboard

const rates = [];                   // generated tokens/s, one per poll
let previous = null;

async function refreshStats() {
  const health = $("health");
  try {
    const s = await getJSON("ui/stats");
    const dt = previous ? s.time_s - previous.time_s : 0;
    const rate = dt > 0 ? (s.generation_tokens - previous.generation_tokens) / dt : 0;
    previous = s;
    rates.push(rate);
    if (rates.length > 60) rates.shift();
    $("s-running").textContent = s.num_running;
    $("s-waiting").textContent = s.num_waiting;
    $("s-kv").textContent = `${(100 * s.kv_cache_usage).toFixed(1)}%`;
    $("s-tps").textContent = rate.toFixed(1);
    const finished = Object.values(s.finished_requests).reduce((a, b) => a + b, 0);
    const parts = [`prompt ${s.prompt_tokens} · generated ${s.generation_tokens} tokens`,
                   `${finished} finished`, `TTFT ${ms(s.ttft_mean_s)}`, `ITL ${ms(s.itl_mean_s)}`];
    if (s.spec_num_draft_tokens) {
      parts.push(`draft acceptance ${(100 * s.spec_acceptance_rate).toFixed(0)}%`);
    }
    $("s-more").textContent = parts.join(" · ");
    health.textContent = s.healthy ? "healthy" : "engine down";
    health.className = s.healthy ? "pill ok" : "pill bad";
    drawChart();
  } catch (error) {
    $("s-more").textContent = error.message;
    health.textContent = "?";
    health.className = "pill";
  }
}

function ms(seconds) {
  return seconds == null ? "–" : `${(1000 * seconds).toFixed(1)} ms`;
}

function drawChart() {
  const canvas = $("tps-chart");
  const g = canvas.getContext("2d");
  const top = Math.max(1, ...rates);
  canvas.width = canvas.clientWidth || canvas.width;   // draw at the displayed size
  const step = canvas.width / 59;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.strokeStyle = "#2f7de1";
  g.lineWidth = 2;
  g.beginPath();
  rates.forEach((rate, i) => {
    const x = canvas.width - (rates.length - 1 - i) * step;     // newest on the right
    const y = canvas.height - 2 - (canvas.height - 4) * rate / top;
    if (i === 0) g.moveTo(x, y);
    else g.lineTo(x, y);
  });
  g.stroke();
}

// ---------------------------------------------------------------- configuration

function flatten(object, prefix = "") {
  return Object.entries(object).flatMap(([key, value]) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? flatten(value, `${prefix}${key}.`)
      : [[prefix + key, typeof value === "string" ? value : JSON.stringify(value)]]);
}

async function loadConfig() {
  const table = $("config-table");
  try {
    const c = await getJSON("ui/config");
    $("model").textContent = `${c.model} · ${c.max_model_len} tokens` +
      (c.deterministic ? " · deterministic" : "");
    table.replaceChildren(...flatten(c).map(([key, value]) => tableRow(key, value)));
  } catch (error) {
    $("model").textContent = "";
    table.replaceChildren(tableRow(error.message));
  }
}

function tableRow(...cells) {
  const row = document.createElement("tr");
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  return row;
}

// ---------------------------------------------------------------- wiring

document.querySelectorAll("[data-persist]").forEach(persist);
$("api-key").addEventListener("change", () => { loadConfig(); refreshStats(); });
$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("chat-form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller?.abort());
$("clear").addEventListener("click", () => {
  conversation.length = 0;
  $("messages").replaceChildren();
  $("chat-status").textContent = "";
});
loadConfig();
refreshStats();
setInterval(() => document.hidden || refreshStats(), 1000);
