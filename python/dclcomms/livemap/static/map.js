// dclcomms live island map: plain JavaScript and a canvas, no dependencies.
// Live: frames from the /map/feed WebSocket (one per core tick: a key frame
// with the whole map, then deltas). Replay: frames from /map/replay.json, a
// file saved by `dclcomms sim --save`, or ?replay=URL. Format: docs/map.md.
"use strict";
(function () {
  const COLORS = { livekit: "#e4572e", "ws-room": "#2e86de", p2p: "#27ae60", fixed: "#8e44ad" };
  const NO_ISLAND = "#9aa4ae";
  const PARCEL = 16; // metres
  const CITY = 150; // Genesis City parcels run -150..150
  const $ = (id) => document.getElementById(id);
  const canvas = $("map");
  const ctx = canvas.getContext("2d");

  // ---- state built from frames -------------------------------------------------
  const state = {
    q: 1, seq: 0, ts: 0,
    peers: new Map(), // slot -> {addr, x, z} (metres)
    islands: new Map(), // id -> island (x, z, r in metres; m: slots; ch: changes)
    islandOf: new Map(), // slot -> island id
    counters: { peers: 0, islands: 0, handshakes_per_s: 0, island_changes_per_s: 0 },
    hot: [],
    scenes: [], // [[name, base x, base y, peers], ...] with a content server
  };
  let synced = false;
  // How long the page spends per frame (ms): applying a frame, drawing the canvas.
  const timing = { applyMax: 0, drawMax: 0, frames: 0, draws: 0 };

  function reset() {
    state.peers.clear(); state.islands.clear(); state.islandOf.clear(); synced = false;
  }

  function setIsland(i, q, changes) {
    const old = state.islands.get(i.id);
    if (old) for (const s of old.m) if (state.islandOf.get(s) === i.id) state.islandOf.delete(s);
    let ch = changes;
    if (old && changes !== null) ch = old.ch.concat(changes).slice(-10);
    const isl = { id: i.id, tr: i.tr, x: i.x * q, z: i.z * q, r: i.r * q, max: i.max, m: i.m,
      since: i.since, ch: ch || [] };
    state.islands.set(i.id, isl);
    for (const s of i.m) state.islandOf.set(s, i.id);
  }

  function apply(f) {
    const t0 = performance.now();
    const ok = applyFrame(f);
    timing.applyMax = Math.max(timing.applyMax, performance.now() - t0);
    timing.frames++;
    return ok;
  }

  function applyFrame(f) {
    const q = f.q || 1;
    state.q = q;
    if (f.k === 1) {
      reset();
      const p = f.peers;
      for (let i = 0; i < p.length; i += 4) state.peers.set(p[i], { addr: p[i + 1], x: p[i + 2] * q, z: p[i + 3] * q });
      for (const i of f.isl) setIsland(i, q, i.ch);
      synced = true;
    } else {
      if (!synced) return false; // a delta needs the key frame before it
      if (f.seq !== state.seq + 1) { synced = false; return false; }
      for (const s of f.del) { state.peers.delete(s); state.islandOf.delete(s); }
      const a = f.add;
      for (let i = 0; i < a.length; i += 4) state.peers.set(a[i], { addr: a[i + 1], x: a[i + 2] * q, z: a[i + 3] * q });
      const m = f.mov; // [slot step, dx, dz, ...] in slot order
      for (let i = 0, s = 0; i < m.length; i += 3) {
        s += m[i];
        const p = state.peers.get(s);
        if (p) { p.x += m[i + 1] * q; p.z += m[i + 2] * q; }
      }
      for (const id of f.gone) {
        const old = state.islands.get(id);
        if (old) for (const s of old.m) if (state.islandOf.get(s) === id) state.islandOf.delete(s);
        state.islands.delete(id);
      }
      for (const i of f.isl) setIsland(i, q, i.ch);
      const g = f.geo || []; // [id, x, z, r, ...]: circles that moved
      for (let i = 0; i < g.length; i += 4) {
        const isl = state.islands.get(g[i]);
        if (isl) { isl.x = g[i + 1] * q; isl.z = g[i + 2] * q; isl.r = g[i + 3] * q; }
      }
    }
    state.seq = f.seq; state.ts = f.ts;
    state.counters = f.counters; state.hot = f.hot; state.scenes = f.scenes || [];
    dirty = true; panelsDirty = true;
    return true;
  }

  // ---- view: pan and zoom --------------------------------------------------------
  const view = { cx: 0, cz: 0, scale: 0.2 }; // metres at the centre, pixels per metre
  let fitted = false;
  function resize() {
    const r = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.floor(r.width * devicePixelRatio));
    canvas.height = Math.max(1, Math.floor(r.height * devicePixelRatio));
    dirty = true;
  }
  function toScreen(x, z) {
    const s = view.scale * devicePixelRatio;
    return [canvas.width / 2 + (x - view.cx) * s, canvas.height / 2 - (z - view.cz) * s];
  }
  function toWorld(px, py) { // CSS pixels
    const s = view.scale;
    const r = canvas.getBoundingClientRect();
    return [view.cx + (px - r.width / 2) / s, view.cz - (py - r.height / 2) / s];
  }
  function fit() {
    if (state.peers.size === 0) return;
    let x0 = Infinity, x1 = -Infinity, z0 = Infinity, z1 = -Infinity;
    for (const p of state.peers.values()) {
      x0 = Math.min(x0, p.x); x1 = Math.max(x1, p.x); z0 = Math.min(z0, p.z); z1 = Math.max(z1, p.z);
    }
    const r = canvas.getBoundingClientRect();
    view.cx = (x0 + x1) / 2; view.cz = (z0 + z1) / 2;
    const span = Math.max(x1 - x0, z1 - z0, 160) * 1.3;
    view.scale = Math.min(r.width, r.height) / span;
    fitted = true; dirty = true;
  }
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    view.cx -= dx / view.scale; view.cz += dy / view.scale;
    drag.x = e.clientX; drag.y = e.clientY; dirty = true;
  });
  window.addEventListener("mouseup", (e) => {
    if (drag && !drag.moved) clickAt(e);
    drag = null;
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    const [wx, wz] = toWorld(e.clientX - r.left, e.clientY - r.top);
    view.scale = Math.min(50, Math.max(0.005, view.scale * Math.exp(-e.deltaY * 0.0015)));
    const [nx, nz] = toWorld(e.clientX - r.left, e.clientY - r.top);
    view.cx += wx - nx; view.cz += wz - nz; dirty = true;
  }, { passive: false });

  // ---- drawing -----------------------------------------------------------------------
  let dirty = true, panelsDirty = true;
  function draw() {
    const w = canvas.width, h = canvas.height, dpr = devicePixelRatio;
    ctx.fillStyle = "#101418"; ctx.fillRect(0, 0, w, h);
    // The parcel grid: every parcel when zoomed in, else every 10th.
    const step = view.scale * PARCEL >= 6 ? 1 : 10;
    const [x0, z1] = toWorld(0, 0);
    const [x1, z0] = toWorld(w / dpr, h / dpr);
    const lo = (v) => Math.max(-CITY, Math.floor(v / PARCEL / step) * step);
    const hi = (v) => Math.min(CITY + 1, Math.ceil(v / PARCEL / step) * step);
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#1f2a33";
    ctx.beginPath();
    for (let px = lo(x0); px <= hi(x1); px += step) {
      const [sx] = toScreen(px * PARCEL, 0);
      const [, sa] = toScreen(0, -CITY * PARCEL), [, sb] = toScreen(0, (CITY + 1) * PARCEL);
      ctx.moveTo(sx, sa); ctx.lineTo(sx, sb);
    }
    for (let pz = lo(z0); pz <= hi(z1); pz += step) {
      const [, sy] = toScreen(0, pz * PARCEL);
      const [sa] = toScreen(-CITY * PARCEL, 0), [sb] = toScreen((CITY + 1) * PARCEL, 0);
      ctx.moveTo(sa, sy); ctx.lineTo(sb, sy);
    }
    ctx.stroke();
    ctx.strokeStyle = "#3a4650"; // the city's edge
    const [ex, ey] = toScreen(-CITY * PARCEL, (CITY + 1) * PARCEL);
    ctx.strokeRect(ex, ey, (2 * CITY + 1) * PARCEL * view.scale * dpr, (2 * CITY + 1) * PARCEL * view.scale * dpr);
    // Islands: a circle (centre, radius) coloured by transport, the size beside it.
    const sel = selected ? state.islands.get(selected) : null;
    for (const i of state.islands.values()) {
      const [sx, sy] = toScreen(i.x, i.z);
      const r = Math.max(4 * dpr, (i.r + 4) * view.scale * dpr);
      const c = COLORS[i.tr] || NO_ISLAND;
      ctx.beginPath(); ctx.arc(sx, sy, r, 0, 2 * Math.PI);
      ctx.fillStyle = c + "33"; ctx.fill();
      ctx.lineWidth = (i === sel ? 3 : 1.5) * dpr; ctx.strokeStyle = i === sel ? "#ffd166" : c; ctx.stroke();
      if (r > 10 * dpr) {
        ctx.fillStyle = "#dde"; ctx.font = `${11 * dpr}px system-ui`;
        ctx.fillText(String(i.m.length), sx + r * 0.72, sy - r * 0.72);
      }
    }
    // Peers: one dot each, in their island's colour.
    const d = Math.max(2, Math.min(5, view.scale * 2)) * dpr;
    for (const [slot, p] of state.peers) {
      const isl = state.islands.get(state.islandOf.get(slot));
      ctx.fillStyle = isl ? (COLORS[isl.tr] || NO_ISLAND) : NO_ISLAND;
      const [sx, sy] = toScreen(p.x, p.z);
      ctx.fillRect(sx - d / 2, sy - d / 2, d, d);
    }
  }

  // ---- panels --------------------------------------------------------------------------
  let selected = null;
  function text(el, v) { if (el.textContent !== String(v)) el.textContent = String(v); }
  function ago(ms) {
    const s = Math.max(0, Math.round((state.ts - ms) / 1000));
    return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
  }
  function li(content, cls) {
    const e = document.createElement("li");
    e.textContent = content;
    if (cls) e.className = cls;
    return e;
  }
  function panels() {
    const c = state.counters;
    text($("peers"), c.peers); text($("islands"), c.islands);
    text($("hs"), c.handshakes_per_s); text($("changes"), c.island_changes_per_s);
    const list = [...state.islands.values()].sort((a, b) => b.m.length - a.m.length).slice(0, 50);
    const ol = $("island-list");
    ol.replaceChildren(...list.map((i) => {
      const e = li(`${i.id} \u00b7 ${i.m.length} \u00b7 ${i.tr || "?"}`, i.id === selected ? "selected" : "");
      e.dataset.island = i.id;
      e.style.borderLeft = `4px solid ${COLORS[i.tr] || NO_ISLAND}`;
      e.style.paddingLeft = "4px";
      e.addEventListener("click", () => select(i.id));
      return e;
    }));
    $("hot").replaceChildren(...state.hot.map(([x, y, n]) => li(`${x},${y}: ${n}`)));
    $("scenes-panel").hidden = state.scenes.length === 0;
    $("scenes").replaceChildren(...state.scenes.map(([name, x, y, n]) =>
      li(`${name || "(unnamed)"} ${x},${y}: ${n}`)));
    const panel = $("island-panel");
    const isl = selected ? state.islands.get(selected) : null;
    panel.hidden = !isl;
    if (!isl) return;
    text($("island-id"), isl.id);
    text($("island-transport"), isl.tr || "unknown");
    text($("island-size"), `${isl.m.length}/${isl.max}`);
    text($("island-age"), ago(isl.since));
    $("island-members").replaceChildren(...isl.m.map((s) => li((state.peers.get(s) || {}).addr || `#${s}`, "addr")));
    $("island-changes").replaceChildren(...isl.ch.slice().reverse().map(([t, k, a]) =>
      li(`${ago(t)} ago ${k === "+" ? "joined" : "left"} ${a}`, "addr")));
  }
  function select(id) { selected = id; dirty = true; panelsDirty = true; }
  function islandAt(px, py) { // CSS pixels in the canvas
    let best = null, bestD = Infinity;
    const [wx, wz] = toWorld(px, py);
    for (const i of state.islands.values()) {
      const d = Math.hypot(i.x - wx, i.z - wz);
      const reach = Math.max(i.r + 4, 6 / view.scale);
      if (d <= reach && d < bestD) { best = i; bestD = d; }
    }
    return best;
  }
  function clickAt(e) {
    const r = canvas.getBoundingClientRect();
    if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) return;
    const i = islandAt(e.clientX - r.left, e.clientY - r.top);
    select(i ? i.id : null);
  }

  function frame() {
    if (dirty) {
      const t0 = performance.now();
      draw();
      dirty = false;
      timing.drawMax = Math.max(timing.drawMax, performance.now() - t0);
      timing.draws++;
    }
    if (panelsDirty) { panels(); panelsDirty = false; }
    requestAnimationFrame(frame);
  }

  // ---- live feed -------------------------------------------------------------------------
  let ws = null, mode = "connecting";
  function setMode(m) { mode = m; const e = $("mode"); e.textContent = m; e.className = `mode ${m}`; }
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/map/feed`);
    ws.onopen = () => setMode("live");
    ws.onmessage = (ev) => {
      if (mode !== "live") return;
      const f = JSON.parse(ev.data);
      apply(f);
      if (!fitted) fit();
    };
    ws.onclose = () => {
      ws = null;
      if (mode === "live" || mode === "connecting") { setMode("disconnected"); setTimeout(live, 2000); }
    };
  }
  function live() {
    stopReplay();
    reset();
    setMode("connecting");
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    connect();
  }

  // ---- replay ------------------------------------------------------------------------------
  let frames = [], at = -1, timer = null;
  function stopReplay() { if (timer) clearTimeout(timer); timer = null; }
  function seek(i) { // applies frames up to i, from the last key frame at or before it
    let k = i;
    while (k > 0 && frames[k].k !== 1) k--;
    if (at < k || at > i) { reset(); at = k - 1; }
    for (let j = at + 1; j <= i; j++) apply(frames[j]);
    at = i;
    $("timeline").value = String(i);
    text($("replay-at"), frames.length ? new Date(frames[i].ts).toISOString().slice(11, 19) : "");
  }
  function play() {
    if (at >= frames.length - 1) { timer = null; return; }
    const dt = at >= 0 ? frames[at + 1].ts - frames[at].ts : 0;
    timer = setTimeout(() => { seek(at + 1); play(); }, Math.min(500, Math.max(30, dt / 8)));
  }
  function startReplay(list) {
    stopReplay();
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    frames = list.filter((f) => f && typeof f === "object");
    const first = frames.findIndex((f) => f.k === 1);
    frames = first < 0 ? [] : frames.slice(first);
    setMode("replay");
    reset(); at = -1; fitted = false;
    $("timeline").max = String(Math.max(0, frames.length - 1));
    if (!frames.length) { text($("replay-at"), "nothing to replay"); return; }
    seek(0); fit(); play();
  }
  function parseFrames(body) {
    const t = body.trim();
    if (t.startsWith("{\"frames\"")) return JSON.parse(t).frames;
    return t.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }
  $("replay").addEventListener("click", async () => {
    const min = Number($("replay-minutes").value) || 5;
    const r = await fetch(`/map/replay.json?seconds=${min * 60}`);
    startReplay((await r.json()).frames);
  });
  $("live").addEventListener("click", live);
  $("timeline").addEventListener("input", (e) => { stopReplay(); seek(Number(e.target.value)); });
  $("open-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (file) startReplay(parseFrames(await file.text()));
  });

  window.addEventListener("resize", resize);
  resize();
  requestAnimationFrame(frame);
  const replayUrl = new URLSearchParams(location.search).get("replay");
  const saved = document.getElementById("replay-data"); // a saved run's own page
  if (saved) {
    $("replay").hidden = true; $("live").hidden = true; $("replay-minutes").parentElement.hidden = true;
    startReplay(JSON.parse(saved.textContent));
  } else if (replayUrl) {
    fetch(replayUrl).then((r) => r.text()).then((t) => startReplay(parseFrames(t)));
  } else {
    connect();
  }
  // For tests and the curious: the state and where an island is on screen.
  window.dclmap = {
    state, view, apply, select, timing, mode: () => mode,
    islandScreen(id) { // CSS pixels relative to the canvas
      const i = state.islands.get(id);
      if (!i) return null;
      const [sx, sy] = toScreen(i.x, i.z);
      return [sx / devicePixelRatio, sy / devicePixelRatio];
    },
  };
})();
