// The demo page: a recruiter view and the candidate's interview room, on
// the controller's public API (api/openapi.yaml). Plain JavaScript, no
// build step. The recruiter token stays in this browser's localStorage;
// the candidate's side uses only the start answer's short-lived
// access_token.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "interviewvm.demo.token";
const LIVE = ["provisioning", "ready", "in_progress", "ending"];
const TERMINAL = ["completed", "failed", "cancelled"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  position: null,
  candidate: null,
  interview: null,
  pc: null,        // RTCPeerConnection of the room
  dc: null,        // its "oai-events" data channel
  mic: null,       // MediaStream of the microphone, when allowed
  stop: null,      // AbortController ending the room's loops
  starting: false, // a start is under way
  lastSeq: 0,      // last transcript seq received (Last-Event-ID)
  insights: null,  // AbortController of the insights poll
  following: false, // the live transcript is followed
  config: { regions: [], prewarm_lead_seconds: 0 }, // GET /demo/config.json
};

// ---- messages and the API

class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function showError(err) {
  $("error").textContent = err ? err.message || String(err) : "";
  $("error").hidden = !err;
  if (err) console.error(err);
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// errorOf turns an error answer ({"error":{"code","message"}}) into an APIError.
async function errorOf(res, what) {
  let code = "http_" + res.status;
  let message = res.statusText;
  try {
    ({ code, message } = (await res.json()).error);
  } catch { /* not the contract's error JSON */ }
  if (res.status === 401) message += " (paste a valid recruiter token above)";
  return new APIError(res.status, code, `${what}: ${res.status} ${code}: ${message}`);
}

// api calls the controller with the recruiter token; it answers
// {status, body} or throws an APIError.
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + state.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(`${method} ${path}: the controller is unreachable (${e.message})`);
  }
  if (!res.ok) throw await errorOf(res, `${method} ${path}`);
  return { status: res.status, body: res.status === 204 ? null : await res.json() };
}

// action runs a button's handler: errors show in the banner.
function action(id, fn) {
  const el = $(id);
  const run = async (ev) => {
    ev.preventDefault();
    showError(null);
    try {
      await fn();
    } catch (e) {
      showError(e);
    }
    refresh();
  };
  el.addEventListener(el.tagName === "FORM" ? "submit" : "click", run);
}

const short = (id) => id.slice(0, 8);
const text = (id, value) => { $(id).textContent = value; };

// ---- webhooks: register a receiver, list what each endpoint was sent

const WEBHOOK_EVENTS = ["interview.ready", "interview.in_progress", "interview.completed",
  "interview.failed", "interview.cancelled", "insights.ready", "insights.failed"];

async function registerWebhook() {
  const { body } = await api("POST", "/v1/webhooks", {
    url: $("webhook-url").value.trim(), events: WEBHOOK_EVENTS, description: "demo page",
  });
  text("webhook-out", `✓ endpoint ${short(body.id)} registered; its signing secret (shown once): ${body.secret}`);
  $("webhook-out").classList.add("done");
}

async function showWebhooks() {
  const list = $("webhook-events");
  list.replaceChildren();
  const { body: endpoints } = await api("GET", "/v1/webhooks?limit=20");
  for (const ep of endpoints.items) {
    const { body: deliveries } = await api("GET", `/v1/webhooks/${ep.id}/deliveries?limit=50`);
    for (const d of deliveries.items) {
      const li = document.createElement("li");
      const code = d.last_status_code === null ? "no answer yet" : `HTTP ${d.last_status_code}`;
      li.textContent = `${new Date(d.created_at).toLocaleTimeString()} ${d.event_type} → ${ep.url}: ` +
        `${d.status} after ${d.attempts} attempt(s), ${code}`;
      list.append(li);
    }
  }
  if (!list.children.length) text("webhook-out", "No event sent yet.");
}

// ---- recruiter view

function addCompetency(name = "", weight = "") {
  const row = $("competency-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".name").value = name;
  row.querySelector(".weight").value = weight;
  row.querySelector(".remove").addEventListener("click", () => row.remove());
  $("competencies").append(row);
}

async function createPosition() {
  const competencies = [...$("competencies").rows].map((tr) => ({
    name: tr.querySelector(".name").value.trim(),
    weight: Number(tr.querySelector(".weight").value),
  }));
  const { body } = await api("POST", "/v1/positions", { title: $("position-title").value.trim(), competencies });
  state.position = body;
  const sum = body.competencies.reduce((s, c) => s + c.weight, 0);
  const shares = body.competencies.map((c) => `${c.name} ${Math.round((100 * c.weight) / sum)}%`).join(", ");
  text("position-out", `✓ ${body.title} (${short(body.id)}): ${shares}`);
  $("position-out").classList.add("done");
}

async function createCandidate() {
  const { body } = await api("POST", "/v1/candidates", {
    full_name: $("candidate-name").value.trim(),
    email: $("candidate-email").value.trim(),
  });
  state.candidate = body;
  text("candidate-out", `✓ ${body.full_name} <${body.email}> (${short(body.id)})`);
  $("candidate-out").classList.add("done");
}

const clock = (at) => new Date(at).toLocaleTimeString([], { hourCycle: "h23" });

// duration says a number of seconds the way a person would.
function duration(s) {
  if (s >= 3600 && s % 3600 === 0) return `${s / 3600} h`;
  if (s >= 60 && s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

// loadConfig reads the regions and the pre-warm lead the controller
// offers (GET /demo/config.json) into the schedule form.
async function loadConfig() {
  const res = await fetch("config.json");
  if (!res.ok) throw await errorOf(res, "GET /demo/config.json");
  state.config = await res.json();
  const select = $("region");
  select.replaceChildren(...state.config.regions.map((r, i) => {
    const o = document.createElement("option");
    o.value = r;
    o.textContent = i === 0 ? `${r} (default)` : r;
    return o;
  }));
  const lead = state.config.prewarm_lead_seconds;
  text("prewarm-hint", lead > 0
    ? `0: no planned time, the start creates the VM. Ahead of time, the controller pre-warms the interview's own VM ` +
      `(created, not booted) up to ${duration(lead)} before it (PREWARM_LEAD), so the start only boots it.`
    : "0: no planned time. Pre-warm is off on this controller (PREWARM_LEAD=0): every start creates its VM.");
}

async function schedule() {
  leaveRoom();
  const minutes = Number($("schedule-in").value || 0);
  if (!(minutes >= 0)) throw new Error("Starts in: a number of minutes, 0 or more");
  const req = { candidate_id: state.candidate.id, position_id: state.position.id };
  if (minutes > 0) req.scheduled_at = new Date(Date.now() + minutes * 60 * 1000).toISOString();
  if ($("region").value) req.region = $("region").value;
  const { body } = await api("POST", "/v1/interviews", req);
  state.interview = body;
  state.lastSeq = 0;
  $("transcript").replaceChildren();
  $("timeline").replaceChildren();
  $("insights").replaceChildren();
  text("insights-state", "");
  for (const id of ["connection", "channel", "mic", "machine", "prewarmed"]) text(id, "—");
  render(body);
  const when = body.scheduled_at ? ` for ${clock(body.scheduled_at)}` : "";
  text("interview-out", `✓ Interview ${short(body.id)} scheduled${when} in ${body.region || "the default region"} ` +
    `for ${state.candidate.full_name}.`);
  $("interview-out").classList.add("done");
  // Follow it from now on: a planned interview's VM is pre-warmed before
  // anyone starts it.
  state.stop = new AbortController();
  watch(body.id, state.stop.signal);
}

// start asks for the interview's VM (202 while it is provisioning: ask
// again, start is idempotent), then joins the room.
async function start() {
  const id = state.interview.id;
  if (!state.stop) {
    state.stop = new AbortController();
    watch(id, state.stop.signal);
  }
  if (!state.following) {
    state.following = true;
    followTranscript(id, state.stop.signal);
  }
  state.starting = true;
  refresh();
  const warm = !!state.interview.prewarmed_at;
  try {
    for (let attempt = 1; ; attempt++) {
      notice(attempt > 1 ? `The VM is not ready yet (202): waiting, attempt ${attempt}…`
        : warm ? "Starting: booting the interview's pre-warmed VM…" : "Starting: creating the interview's VM…");
      const { status, body } = await api("POST", `/v1/interviews/${id}/start?wait=30`);
      render(body.interview);
      if (status === 200) {
        notice("The VM is ready: connecting…");
        await join(body.connect);
        return;
      }
    }
  } finally {
    state.starting = false;
  }
}

// ---- the interview room

// join connects this browser to the interview over WebRTC: microphone if
// allowed (else receive only), the "oai-events" channel, the offer posted
// through the controller with the start's access token.
async function join(connect) {
  const pc = new RTCPeerConnection();
  state.pc = pc;
  pc.addEventListener("connectionstatechange", () => {
    const ok = pc.connectionState === "connected";
    text("connection", `${pc.connectionState} (ICE ${pc.iceConnectionState})`);
    $("connection").className = ok ? "ok" : pc.connectionState === "failed" ? "bad" : "";
    if (ok) notice("Connected. The interviewer is speaking: answer by voice or type below.");
    if (pc.connectionState === "failed") {
      showError(new Error("Connection failed: ICE could not reach the interview's VM."));
    }
  });
  pc.addEventListener("track", (ev) => {
    $("remote-audio").srcObject = ev.streams[0] || new MediaStream([ev.track]);
  });
  try {
    state.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const track = state.mic.getAudioTracks()[0];
    pc.addTrack(track, state.mic);
    text("mic", `on (${track.label || "microphone"})`);
  } catch (e) {
    pc.addTransceiver("audio", { direction: "recvonly" });
    text("mic", `off (${e.name}): listening only, answer by typing`);
  }

  const dc = pc.createDataChannel("oai-events");
  state.dc = dc;
  text("channel", "connecting");
  dc.addEventListener("open", () => { text("channel", "open"); $("channel").className = "ok"; refresh(); });
  dc.addEventListener("close", () => { text("channel", "closed"); $("channel").className = ""; refresh(); });
  dc.addEventListener("message", (ev) => onServerEvent(JSON.parse(ev.data)));

  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, 3000); // no trickle: the offer carries the candidates
  let res;
  try {
    res = await fetch(connect.sdp_url, {
      method: "POST",
      body: pc.localDescription.sdp,
      headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + connect.access_token },
    });
  } catch (e) {
    throw new Error(`Connection failed: the controller is unreachable (${e.message})`);
  }
  if (res.status !== 201) {
    hangUp();
    throw await errorOf(res, "Connection failed: POST session/sdp");
  }
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  text("connection", `${pc.connectionState} (ICE ${pc.iceConnectionState})`);
}

// gathered resolves once ICE gathering completes, or after ms.
function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ms);
  });
}

// onServerEvent shows what the interviewer says as it says it (the
// Realtime API's output audio transcript); the saved transcript arrives
// through the stream.
let speech = "";
function onServerEvent(ev) {
  switch (ev.type) {
    case "response.output_audio_transcript.delta":
      speech += ev.delta;
      break;
    case "response.output_audio_transcript.done":
      speech = ev.transcript;
      break;
    case "response.created":
      speech = "";
      return;
    case "error":
      showError(new Error(`The interviewer: ${ev.error.message}`));
      return;
    default:
      return;
  }
  $("speaking").hidden = !speech;
  text("speaking", `Interviewer: ${speech}`);
}

function sendAnswer() {
  const answer = $("answer").value.trim();
  if (!answer || state.dc?.readyState !== "open") return;
  state.dc.send(JSON.stringify({
    type: "conversation.item.create",
    item: { type: "message", role: "user", content: [{ type: "input_text", text: answer }] },
  }));
  // The Realtime API answers a text item only when asked; the simulated
  // interviewer answers on its own and ignores this.
  state.dc.send(JSON.stringify({ type: "response.create" }));
  $("answer").value = "";
}

async function end() {
  const { body } = await api("POST", `/v1/interviews/${state.interview.id}/end`);
  render(body);
  notice("Ending: the VM hangs up, flushes the transcript and stops…");
}

function hangUp() {
  state.dc?.close();
  state.pc?.close();
  state.mic?.getTracks().forEach((t) => t.stop());
  state.pc = state.dc = state.mic = null;
  if ($("connection").textContent !== "—") text("connection", "closed");
  if ($("channel").textContent !== "—") text("channel", "closed");
  $("connection").className = $("channel").className = "";
}

function leaveRoom() {
  state.insights?.abort();
  state.insights = null;
  state.stop?.abort();
  state.stop = null;
  state.following = false;
  hangUp();
  $("speaking").hidden = true;
  speech = "";
  notice(null);
}

// render shows the interview: status, end reason, machine.
function render(iv) {
  state.interview = iv;
  text("interview-id", iv.id);
  text("status", iv.status);
  $("status").className = "pill " + iv.status;
  text("end-reason", iv.end_reason ? `(${iv.end_reason})` : "");
  if (iv.machine) text("machine", `${iv.machine.name} · ${iv.machine.state}`);
  text("scheduled", iv.scheduled_at ? `for ${clock(iv.scheduled_at)} in ${iv.region}` : `not planned · ${iv.region || "default region"}`);
  if (iv.prewarmed_at) {
    text("prewarmed", iv.status === "scheduled"
      ? `at ${clock(iv.prewarmed_at)}: its VM is created, not booted; the start only boots it`
      : `at ${clock(iv.prewarmed_at)}`);
  }
  else if (iv.status === "scheduled") text("prewarmed", iv.scheduled_at ? "not yet" : "—");
  if (TERMINAL.includes(iv.status)) {
    hangUp();
    $("speaking").hidden = true;
    notice(`Interview ended: ${iv.status}${iv.end_reason ? ` (${iv.end_reason})` : ""}.`);
  }
  refresh();
}

// watch polls the interview and its timeline until it is terminal.
async function watch(id, signal) {
  while (!signal.aborted) {
    try {
      const [iv, events] = await Promise.all([api("GET", `/v1/interviews/${id}`), api("GET", `/v1/interviews/${id}/events`)]);
      if (signal.aborted) return;
      render(iv.body);
      $("timeline").replaceChildren(...events.body.items.map(timelineItem));
      if (iv.body.status === "completed") watchInsights(id);
      if (TERMINAL.includes(iv.body.status)) return;
    } catch (e) {
      showError(e);
    }
    await sleep(1000);
  }
}

function timelineItem(ev) {
  const li = document.createElement("li");
  const at = document.createElement("time");
  at.dateTime = ev.at;
  at.textContent = clock(ev.at);
  const actor = document.createElement("span");
  actor.className = "actor";
  actor.textContent = ` by ${ev.actor}`;
  li.append(at, `${ev.from} → ${ev.to}${ev.reason ? ` (${ev.reason})` : ""}`, actor);
  return li;
}

// ---- insights: the analysis of a completed interview, scored per
// competency with evidence quoted from the transcript (each quote links to
// its segment).

const INSIGHTS_FINAL = ["ready", "failed", "not_applicable"];

async function watchInsights(id) {
  state.insights?.abort();
  const stop = new AbortController();
  state.insights = stop;
  text("insights-state", "(analysing…)");
  while (!stop.signal.aborted) {
    try {
      const res = await fetch(`/v1/interviews/${id}/insights`, { headers: { Authorization: `Bearer ${state.token}` } });
      if (stop.signal.aborted) return;
      if (res.ok) {
        const ins = await res.json();
        text("insights-state", `(${ins.status})`);
        if (INSIGHTS_FINAL.includes(ins.status)) {
          renderInsights(ins);
          const events = await api("GET", `/v1/interviews/${id}/events`);
          $("timeline").replaceChildren(...events.body.items.map(timelineItem));
          return;
        }
      } else if (res.status !== 404) {
        throw await errorOf(res, "insights");
      }
    } catch (e) {
      showError(e);
    }
    await sleep(1000);
  }
}

function renderInsights(ins) {
  const box = $("insights");
  box.replaceChildren();
  if (ins.status !== "ready") {
    const p = document.createElement("p");
    p.className = "insights-error";
    p.textContent = `${ins.status}: ${ins.error || ""}`;
    box.append(p);
    return;
  }
  const head = document.createElement("p");
  head.id = "insights-overall";
  head.textContent = `Overall ${ins.overall_score.toFixed(2)} / 5 · ${ins.recommendation.replace("_", " ")}` +
    ` · ${ins.simulated ? "simulated scorer (not a model)" : ins.model}` +
    ` · ${ins.usage.input_tokens}+${ins.usage.output_tokens} tokens`;
  const summary = document.createElement("p");
  summary.textContent = ins.summary;
  box.append(head, summary);
  const list = document.createElement("ul");
  list.className = "competencies";
  for (const c of ins.competencies) {
    const li = document.createElement("li");
    li.className = "competency";
    li.dataset.name = c.name;
    const title = document.createElement("strong");
    title.textContent = `${c.name} (weight ${c.weight}): ${c.score}/5`;
    const why = document.createElement("div");
    why.textContent = c.rationale;
    li.append(title, why);
    for (const ev of c.evidence) {
      const q = document.createElement("a");
      q.className = "evidence";
      q.href = `#seg-${ev.seq}`;
      q.dataset.seq = ev.seq;
      q.textContent = `“${ev.quote}” (line ${ev.seq})`;
      q.addEventListener("click", () => {
        const seg = $("transcript").querySelector(`[data-seq="${ev.seq}"]`);
        seg?.classList.add("quoted");
      });
      li.append(q);
    }
    list.append(li);
  }
  box.append(list);
  if (ins.dropped_evidence) {
    const d = document.createElement("p");
    d.className = "muted";
    d.textContent = `${ins.dropped_evidence} quote(s) not found verbatim in the transcript were dropped.`;
    box.append(d);
  }
}

// ---- the live transcript: server-sent events read with fetch() (an
// EventSource cannot send Authorization), resumed with Last-Event-ID.

async function followTranscript(id, signal) {
  while (!signal.aborted) {
    try {
      const headers = { Authorization: "Bearer " + state.token };
      if (state.lastSeq > 0) headers["Last-Event-ID"] = String(state.lastSeq);
      const res = await fetch(`/v1/interviews/${id}/transcript/stream`, { headers, signal });
      if (!res.ok) throw await errorOf(res, "transcript stream");
      text("stream-state", "live");
      for await (const ev of serverSentEvents(res.body)) {
        if (ev.event === "segment") {
          addSegment(JSON.parse(ev.data));
          state.lastSeq = Number(ev.id);
        } else if (ev.event === "end") {
          text("stream-state", JSON.parse(ev.data).complete ? "complete" : "ended");
          return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof APIError && e.status !== 429 && e.status < 500) {
        showError(e);
        return;
      }
    }
    text("stream-state", "reconnecting…");
    await sleep(1000);
  }
}

// serverSentEvents yields {event, id, data} of a text/event-stream body.
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const ev = { event: "message", id: "", data: [] };
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue; // keep-alive comments
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") ev.data.push(value);
        else if (field === "event" || field === "id") ev[field] = value;
      }
      if (ev.data.length) yield { ...ev, data: ev.data.join("\n") };
    }
  }
}

function addSegment(seg) {
  if ($("transcript").querySelector(`[data-seq="${seg.seq}"]`)) return;
  const li = document.createElement("li");
  li.dataset.seq = seg.seq;
  li.id = `seg-${seg.seq}`;
  li.className = seg.speaker + (seg.failed ? " failed" : "");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = `${seg.seq} · ${seg.speaker}`;
  li.append(who, seg.failed ? "(could not be transcribed)" : seg.text);
  $("transcript").append(li);
  li.scrollIntoView({ block: "nearest" });
}

// ---- buttons follow the state

function refresh() {
  const iv = state.interview;
  const status = iv?.status;
  const open = state.dc?.readyState === "open";
  $("schedule").disabled = !state.position || !state.candidate || (iv && !TERMINAL.includes(status));
  $("start").disabled = !iv || !["scheduled", "provisioning", "ready"].includes(status) || !!state.pc || state.starting;
  $("end").disabled = !iv || !LIVE.includes(status) || status === "ending";
  $("answer").disabled = $("send").disabled = !open;
  text("token-state", state.token ? "Token saved in this browser's localStorage." : "No token yet: paste the one make run printed.");
}

function init() {
  $("token").value = state.token;
  addCompetency("Go", 3);
  addCompetency("PostgreSQL", 2);
  action("token-form", async () => {
    state.token = $("token").value.trim();
    localStorage.setItem(TOKEN_KEY, state.token);
  });
  $("add-competency").addEventListener("click", () => addCompetency());
  action("position-form", createPosition);
  action("candidate-form", createCandidate);
  action("schedule", schedule);
  action("start", start);
  action("answer-form", async () => sendAnswer());
  action("end", end);
  action("webhook-form", registerWebhook);
  action("show-webhooks", showWebhooks);
  loadConfig().catch(showError);
  refresh();
}

init();
