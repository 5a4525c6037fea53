// fleet dashboard: reads /api/events (one reading of the fleet a second)
// and draws it. Every value from the fleet is put on the page as text
// (textContent), never as HTML. Actions send the token given in the
// address (#token=…) or typed in the header.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = "";
let latest = null;
let deadTotal = -1;
let deadRefreshed = 0;

function loadToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    sessionStorage.setItem("fleet-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  token = sessionStorage.getItem("fleet-token") || "";
}

function headers(json) {
  const h = {};
  if (token) h["Authorization"] = "Bearer " + token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function num(n) {
  return el("td", Number(n || 0).toLocaleString("en-US"), "num");
}

function ago(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  const s = Math.round(seconds);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}

function rate(x) {
  return Math.round(x || 0).toLocaleString("en-US") + "/s";
}

function showError(text) {
  const e = $("#error");
  e.hidden = !text;
  e.textContent = text || "";
}

function render(state) {
  latest = state;
  $("#updated").textContent = state.at || "–";
  const scope = state.scope || {};
  $("#scope").textContent = scope.tenant ? "tenant " + scope.tenant : "";
  showError(state.error ? "NATS: " + state.error : "");
  const s = state.status || {};
  $("#tasks-total").textContent = (s.tasks ?? "–").toLocaleString("en-US");
  $("#results-total").textContent = s.results === undefined || s.results === null ? "–" : s.results.toLocaleString("en-US");
  $("#dead-total").textContent = (s.dead ?? "–").toLocaleString("en-US");
  $("#nodes-total").textContent = scope.tenant ? "–" : String((state.nodes || []).length);
  renderKinds(s.kinds || []);
  renderGroups(s.groups || []);
  renderNodes(state.nodes || [], !scope.tenant);
  renderChart(state.throughput || []);
  const dead = s.dead ?? 0;
  if (dead !== deadTotal || Date.now() - deadRefreshed > 5000) {
    deadTotal = dead;
    loadDead();
  }
}

function renderKinds(kinds) {
  const body = $("#kinds tbody");
  body.replaceChildren();
  const max = Math.max(1, ...kinds.map((k) => k.count));
  for (const k of kinds) {
    const bar = el("div", null, "bar");
    bar.style.width = Math.max(1, (100 * k.count) / max) + "%";
    const barCell = el("td");
    barCell.appendChild(bar);
    const tr = row([k.tenant || "", el("td", k.kind, "mono"), num(k.count), barCell]);
    tr.dataset.kind = (k.tenant ? k.tenant + "/" : "") + k.kind;
    body.appendChild(tr);
  }
  $("#kinds-empty").hidden = kinds.length > 0;
}

function renderGroups(groups) {
  const body = $("#groups tbody");
  body.replaceChildren();
  for (const g of groups) {
    const cells = [
      el("td", g.name, "name"),
      el("td", g.kinds.length ? g.kinds.join(", ") : "all kinds", "mono"),
      num(g.pending), num(g.in_flight), num(g.redelivered), num(g.waiting_pulls),
      el("td", g.oldest_waiting_s === undefined ? "–" : ago(g.oldest_waiting_s), "num oldest"),
    ];
    cells[2].classList.add("pending");
    cells[3].classList.add("in-flight");
    cells[4].classList.add("redelivered");
    if (g.paused) {
      const badge = el("span", " paused" + (g.paused_until ? " until " + g.paused_until : ""), "paused");
      cells[0].appendChild(badge);
    }
    const tr = row(cells);
    tr.dataset.group = g.name;
    tr.dataset.paused = g.paused ? "yes" : "no";
    body.appendChild(tr);
  }
}

function renderNodes(nodes, operator) {
  const body = $("#nodes tbody");
  body.replaceChildren();
  for (const n of nodes) {
    const action = el("td");
    if (operator && n.state === "ready") {
      const b = el("button", "Drain");
      b.addEventListener("click", () => drain(n));
      action.appendChild(b);
    }
    const state = el("td", n.state, "state-" + n.state);
    const since = el("td", n.started ? n.started.replace("T", " ").replace(/\.\d+Z$/, "Z") : "", "muted");
    const tr = row([el("td", n.name, "name"), n.group, el("td", n.kinds.join(", "), "mono"), state,
      el("td", n.in_flight + " / " + n.concurrency, "num"), num(n.ok), num(n.failed), num(n.retried), since, action]);
    tr.dataset.node = n.id;
    tr.children[5].classList.add("ok");
    tr.children[6].classList.add("failed");
    body.appendChild(tr);
  }
  $("#nodes-empty").hidden = nodes.length > 0;
}

function renderChart(samples) {
  const canvas = $("#chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  // The last 15 minutes, or less while the dashboard has seen less (at least a minute).
  const now = Date.now() / 1000;
  const span = Math.min(900, Math.max(60, samples.length ? now - samples[0].t : 0));
  const max = Math.max(1, ...samples.map((p) => p.ok + p.failed));
  canvas.dataset.max = String(Math.max(0, ...samples.map((p) => p.ok)));
  canvas.dataset.points = String(samples.length);
  ctx.strokeStyle = "#e3e6ec";
  ctx.fillStyle = "#6b7385";
  ctx.font = "12px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = pad + ((h - 2 * pad) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(Math.round(max * (1 - i / 4)).toLocaleString("en-US"), 2, y - 2);
  }
  const x = (t) => pad + ((w - pad - 4) * (t - (now - span))) / span;
  const y = (v) => h - pad - ((h - 2 * pad) * v) / max;
  for (const [key, color] of [["ok", "#1a9e5c"], ["failed", "#d2423a"]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
    ctx.stroke();
  }
  ctx.fillText(span >= 120 ? Math.round(span / 60) + " min ago" : Math.round(span) + " s ago", pad, h - 8);
  ctx.fillText("now", w - 30, h - 8);
  const last = samples[samples.length - 1] || { ok: 0, failed: 0 };
  $("#rate-ok").textContent = rate(last.ok);
  $("#rate-failed").textContent = rate(last.failed);
}

async function loadDead() {
  deadRefreshed = Date.now();
  const res = await fetch("/api/dead", { headers: headers(false) });
  if (!res.ok) return;
  const data = await res.json();
  const body = $("#dead tbody");
  const checked = new Set([...body.querySelectorAll("input:checked")].map((c) => c.value));
  body.replaceChildren();
  for (const d of data.letters) {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = String(d.seq);
    box.checked = checked.has(box.value);
    box.addEventListener("change", updateButtons);
    const boxCell = el("td");
    boxCell.appendChild(box);
    const payload = el("td", d.preview, "mono payload");
    payload.title = d.preview_as + ", " + d.bytes + " bytes";
    const tr = row([boxCell, num(d.seq), el("td", (d.tenant ? d.tenant + "/" : "") + d.kind, "mono"),
      el("td", d.id, "mono id"), num(d.attempts), el("td", d.code + " " + d.error, "error-text"), payload]);
    tr.dataset.seq = String(d.seq);
    body.appendChild(tr);
  }
  $("#dead-empty").hidden = data.letters.length > 0;
  $("#dead-shown").textContent = data.total > data.letters.length ? "(newest " + data.letters.length + " of " + data.total + ")" : "";
  updateButtons();
}

function chosen() {
  return [...document.querySelectorAll("#dead tbody input:checked")].map((c) => Number(c.value));
}

function updateButtons() {
  const none = chosen().length === 0;
  $("#replay").disabled = none;
  $("#delete").disabled = none;
}

async function act(path, body) {
  const res = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body) });
  let data = {};
  try { data = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) throw new Error(data.error || res.statusText || String(res.status));
  return data;
}

async function deadAction(kind) {
  const seqs = chosen();
  const message = $("#action-message");
  try {
    const data = await act("/api/dead/" + kind, { seqs });
    if (kind === "replay") {
      const skipped = data.skipped.map((s) => s.seq + ": " + s.why).join("; ");
      message.textContent = "replayed " + data.replayed.length + (skipped ? ", skipped " + skipped : "");
    } else {
      message.textContent = "deleted " + data.deleted.length;
    }
  } catch (err) {
    message.textContent = kind + " refused: " + err.message;
  }
  loadDead();
}

async function drain(node) {
  const message = $("#action-message");
  try {
    await act("/api/nodes/" + encodeURIComponent(node.id) + "/drain", {});
    message.textContent = "node " + node.name + " is draining";
  } catch (err) {
    message.textContent = "drain refused: " + err.message;
  }
}

async function lookup(event) {
  event.preventDefault();
  const id = $("#task-id").value.trim();
  const out = $("#task-result");
  out.replaceChildren();
  if (!id) return;
  const res = await fetch("/api/task?id=" + encodeURIComponent(id), { headers: headers(false) });
  const data = await res.json();
  if (!res.ok) { out.appendChild(el("p", data.error, "error")); return; }
  if (!data.found) { out.appendChild(el("p", "No result kept for task " + id + ".", "muted not-found")); return; }
  const dl = document.createElement("dl");
  dl.className = "found";
  const add = (k, v, cls) => { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v, cls)); };
  add("task", data.id, "mono task");
  add("subject", data.subject, "mono");
  for (const [k, v] of Object.entries(data.headers)) add(k, v, "mono header");
  add("result (" + data.preview_as + ", " + data.bytes + " bytes)", data.preview, "mono result");
  out.appendChild(dl);
}

async function stream() {
  const live = $("#live");
  for (;;) {
    try {
      const res = await fetch("/api/events", { headers: headers(false) });
      if (res.status === 401) {
        live.textContent = "token needed";
        live.className = "pill down";
        showError("This dashboard needs a token: paste it at the top right.");
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      live.textContent = "live";
      live.className = "pill live";
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data && chunk.includes("event: state")) render(JSON.parse(data));
        }
      }
    } catch (_) { /* the dashboard went away: try again */ }
    live.textContent = "reconnecting…";
    live.className = "pill down";
    await new Promise((r) => setTimeout(r, 1000));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadToken();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("fleet-token", token);
    $("#token").value = "";
  });
  $("#select-all").addEventListener("change", (e) => {
    for (const c of document.querySelectorAll("#dead tbody input")) c.checked = e.target.checked;
    updateButtons();
  });
  $("#replay").addEventListener("click", () => deadAction("replay"));
  $("#delete").addEventListener("click", () => deadAction("delete"));
  $("#lookup").addEventListener("submit", lookup);
  stream();
});
