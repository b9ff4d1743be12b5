// meshrpc live dashboard: polls /api/instances and every instance's /api/stats once a
// second, and turns counter differences into rates and latency percentiles.
// Plain DOM, no dependencies. Every string from JSON goes through textContent.
'use strict';

const POLL_MS = 1000;     // one tick per second (measured from the start of a tick)
const TIMEOUT_MS = 800;   // per request
const HISTORY = 60;       // points kept per sparkline
const SVG_NS = 'http://www.w3.org/2000/svg';
const CHART_W = 120, CHART_H = 28;

// ---- state -------------------------------------------------------------------------

let list = null;           // last good /api/instances body
const admins = new Map();  // admin_addr -> {ok, error, last: sample|null, delta: Map|null}
const views = new Map();   // service -> {section, count, tbody, methodsDiv, rows: Map, methods: Map}

// ---- small helpers -----------------------------------------------------------------

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;  // avoid needless mutations
}

const byKey = (k) => (a, b) => (a[k] < b[k] ? -1 : a[k] > b[k] ? 1 : 0);
const fmtRate = (v) => (Number.isFinite(v) ? v.toFixed(1) : '–');
const fmtSecs = (ms) => String(+(ms / 1000).toFixed(1)); // 3000 -> "3", 400 -> "0.4"

const fmtPct = (v) => (Number.isFinite(v) ? `${v.toFixed(v < 10 ? 2 : 1)}%` : '–');

// Seconds -> "850 µs" / "12.3 ms" / "1.50 s"; "–" when unknown.
function fmtDur(s) {
  if (!Number.isFinite(s)) return '–';
  let v = s, unit = 's';
  if (s < 1e-3) { v = s * 1e6; unit = 'µs'; } else if (s < 1) { v = s * 1e3; unit = 'ms'; }
  const digits = v < 10 ? 2 : v < 100 ? 1 : 0;
  return `${v.toFixed(digits)} ${unit}`;
}

// Keeps `parent`'s children exactly `nodes`, in that order, moving only misplaced ones.
function placeInOrder(parent, nodes) {
  nodes.forEach((n, i) => {
    if (parent.children[i] !== n) parent.insertBefore(n, parent.children[i] || null);
  });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}

// An admin address as a URL base. An unspecified host (0.0.0.0 / [::]) means "this host".
function adminBase(addr) {
  const m = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(addr);
  if (m && (m[1] === '0.0.0.0' || m[1] === '[::]' || m[1] === '')) {
    return `http://${location.hostname}:${m[2]}`;
  }
  return `http://${addr}`;
}

// GET url as JSON; never throws. Resolves to {ok: true, body, t} or {ok: false, error}.
// `t` is the browser's clock when the response arrived (the sample's timestamp).
const timedOut = `timed out after ${TIMEOUT_MS} ms`;
async function getJSON(url) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const res = await fetch(url, { signal: ctl.signal, cache: 'no-store' });
    const t = performance.now();
    const body = await res.json().catch(() => null);  // not JSON (or aborted): below
    if (!res.ok) return { ok: false, error: (body && body.error) || `HTTP ${res.status}` };
    if (body === null || typeof body !== 'object') {
      return { ok: false, error: ctl.signal.aborted ? timedOut : 'invalid JSON' };
    }
    return { ok: true, body, t };
  } catch (e) {
    return { ok: false, error: ctl.signal.aborted ? timedOut : String((e && e.message) || e) };
  } finally {
    clearTimeout(timer);
  }
}

// ---- samples, differences and percentiles ------------------------------------------

const num = (v) => (Number.isFinite(v) ? v : 0);

function toSample(stats, t) {
  const methods = new Map();
  for (const m of Array.isArray(stats.methods) ? stats.methods : []) {
    methods.set(String(m.method), {
      service: String(m.service),
      calls: num(m.calls),
      errors: num(m.errors),
      buckets: Array.isArray(m.buckets) ? m.buckets.map(num) : [],
    });
  }
  return {
    t,
    uptime: num(stats.uptime_ms),
    ready: stats.ready !== false,
    bounds: Array.isArray(stats.bucket_bounds_s) ? stats.bucket_bounds_s.map(num) : [],
    methods,
  };
}

// Per-method differences between two consecutive samples of one admin endpoint, or null
// when there is no usable pair: a counter went down (the process restarted) or no time
// passed. The caller then starts over from `cur`.
function diff(prev, cur) {
  const dt = (cur.t - prev.t) / 1000;
  if (!(dt > 0) || cur.uptime < prev.uptime) return null;
  const out = new Map();
  for (const [name, m] of cur.methods) {
    // A method missing from the previous sample had all-zero counters then.
    const p = prev.methods.get(name) || { calls: 0, errors: 0, buckets: [] };
    const dBuckets = m.buckets.map((b, i) => b - (p.buckets[i] || 0));
    if (m.calls < p.calls || m.errors < p.errors || dBuckets.some((d) => d < 0)) return null;
    out.set(name, { service: m.service, dCalls: m.calls - p.calls, dErrors: m.errors - p.errors, dBuckets, dt });
  }
  return out;
}

// The q-quantile (0..1) of non-cumulative bucket counts, in seconds, interpolating
// linearly inside the bucket (lower edge 0 for the first). The +Inf bucket (index
// bounds.length) has no upper edge: it reports the last finite bound. NaN when empty.
function quantile(q, counts, bounds) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!(total > 0) || bounds.length === 0) return NaN;
  const rank = q * total;
  let cum = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (c > 0 && cum + c >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1];
      const lower = i === 0 ? 0 : bounds[i - 1];
      return lower + (bounds[i] - lower) * ((rank - cum) / c);
    }
    cum += c;
  }
  return bounds[bounds.length - 1];  // rounding left the rank past the end
}

// The distinct admin addresses of a service's listed instances.
function adminsOf(svc) {
  return [...new Set(svc.instances.map((i) => i.admin_addr).filter(Boolean))];
}

// Requests/s of one admin endpoint's methods of `service`; null when unknown.
function instanceRate(addr, service) {
  const st = addr && admins.get(addr);
  if (!st || !st.ok || !st.delta) return null;
  let rps = 0;
  for (const d of st.delta.values()) if (d.service === service) rps += d.dCalls / d.dt;
  return rps;
}

// One method aggregated over the service's instances for the last interval.
function methodStats(name, addrs) {
  const agg = { known: false, rps: 0, calls: 0, errors: 0, buckets: [], bounds: [] };
  for (const addr of addrs) {
    const st = admins.get(addr);
    if (!st || !st.ok || !st.delta) continue;
    agg.known = true;
    const d = st.delta.get(name);
    if (!d) continue;
    agg.rps += d.dCalls / d.dt;
    agg.calls += d.dCalls;
    agg.errors += d.dErrors;
    d.dBuckets.forEach((b, i) => { agg.buckets[i] = (agg.buckets[i] || 0) + b; });
    if (agg.bounds.length === 0) agg.bounds = st.last.bounds;
  }
  // Fill holes (instances reporting fewer buckets) so the sum has no undefined slots.
  agg.buckets = Array.from(agg.buckets, (b) => b || 0);
  const noCalls = !(agg.calls > 0);
  agg.errPct = noCalls ? NaN : (100 * agg.errors) / agg.calls;
  agg.p50 = noCalls ? NaN : quantile(0.5, agg.buckets, agg.bounds);
  agg.p99 = noCalls ? NaN : quantile(0.99, agg.buckets, agg.bounds);
  return agg;
}

// ---- sparklines --------------------------------------------------------------------

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// An empty chart: one <path> per line class; the tooltip (<title>) tells the peak.
function chart(className, lines) {
  const svg = svgEl('svg', { class: `chart ${className}`, viewBox: `0 0 ${CHART_W} ${CHART_H}`, preserveAspectRatio: 'none' });
  const title = svgEl('title', {});
  const paths = lines.map((cls) => svgEl('path', { class: cls }));
  svg.append(title, ...paths);
  return { svg, title, paths };
}

// Path data for `values` (null = gap) scaled to 0..max, newest point at the right edge.
function pathData(values, max) {
  const step = CHART_W / (HISTORY - 1);
  let d = '', pen = false;
  values.forEach((v, i) => {
    if (v === null) { pen = false; return; }
    const x = CHART_W - (values.length - 1 - i) * step;
    const y = CHART_H - 1 - (v / max) * (CHART_H - 2);
    d += `${pen ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)} `;
    pen = true;
  });
  return d.trim();
}

function drawChart(c, series, unit) {
  const max = Math.max(0, ...series.flat().filter((v) => v !== null));
  const scale = max > 0 ? max : 1;  // flat line at the bottom when everything is 0
  series.forEach((vals, i) => c.paths[i].setAttribute('d', pathData(vals, scale)));
  setText(c.title, `last ${HISTORY} s, peak ${+max.toFixed(2)} ${unit}`);
}

const push = (arr, v) => { arr.push(v); if (arr.length > HISTORY) arr.shift(); };

// ---- DOM: services, instances, methods ----------------------------------------------

function serviceView(name) {
  let v = views.get(name);
  if (v) return v;
  const section = el('section', 'service');
  section.dataset.service = name;
  const h2 = el('h2', null, name), count = el('span', 'count');
  h2.appendChild(count);
  const table = el('table', 'instances');
  const head = table.createTHead().insertRow();
  for (const h of ['instance', 'address', 'health', 'lease', 'metadata', 'req/s']) head.appendChild(el('th', null, h));
  const tbody = table.createTBody();
  const methodsDiv = el('div', 'methods');
  section.append(h2, table, methodsDiv);
  v = { section, count, tbody, methodsDiv, rows: new Map(), methods: new Map() };
  views.set(name, v);
  return v;
}

function instanceRow(view, service, inst) {
  let r = view.rows.get(inst.id);
  if (r) return r;
  const tr = el('tr', 'instance');
  tr.dataset.instance = inst.id;
  tr.dataset.service = service;
  r = { tr };
  for (const c of ['id', 'addr', 'health', 'lease', 'meta', 'rps']) {
    r[c] = el('td', c);
    tr.appendChild(r[c]);
  }
  setText(r.id, inst.id);
  r.badge = el('span', 'badge');
  r.health.appendChild(r.badge);
  view.rows.set(inst.id, r);
  return r;
}

function updateInstanceRow(r, service, inst) {
  // Address cell: RPC address, plus a link to the instance's own admin endpoint.
  const key = `${inst.addr}|${inst.admin_addr}`;
  if (r.addrKey !== key) {
    r.addrKey = key;
    r.addr.replaceChildren(document.createTextNode(String(inst.addr)));
    if (inst.admin_addr) {
      const a = el('a', 'admin', `admin ${inst.admin_addr}`);
      a.href = `${adminBase(inst.admin_addr)}/`;
      r.addr.append(' ', a);
    }
  }

  const st = inst.admin_addr ? admins.get(inst.admin_addr) : null;
  let health, cls;
  if (!inst.admin_addr) { health = 'no admin endpoint'; cls = 'none'; }
  else if (!st || !st.ok) { health = 'down'; cls = 'down'; }
  else if (!st.last.ready) { health = 'not ready'; cls = 'notready'; }
  else { health = 'ready'; cls = 'ready'; }
  setText(r.badge, health);
  r.badge.className = `badge ${cls}`;
  r.health.title = st && !st.ok ? String(st.error) : '';

  const l = inst.lease;
  let lease = '–';
  if (l && Number.isFinite(l.ttl_ms)) {
    // Older registries may not send renewed_ms_ago: derive it from the time left.
    const ago = Number.isFinite(l.renewed_ms_ago) ? l.renewed_ms_ago
      : Math.max(0, l.ttl_ms - num(l.expires_in_ms));
    lease = `renewed ${fmtSecs(ago)} s ago, TTL ${fmtSecs(l.ttl_ms)} s`;
  }
  setText(r.lease, lease);

  const meta = inst.metadata && typeof inst.metadata === 'object' ? inst.metadata : {};
  setText(r.meta, Object.entries(meta).map(([k, v]) => `${k}=${v}`).join(' ') || '–');

  setText(r.rps, fmtRate(instanceRate(inst.admin_addr, service)));
}

function methodView(view, name) {
  let m = view.methods.get(name);
  if (m) return m;
  const div = el('div', 'method');
  div.dataset.method = name;
  // Show "Add" rather than "Calculator.Add": the section already names the service.
  const prefix = `${view.section.dataset.service}.`;
  const label = el('span', 'name', name.startsWith(prefix) ? name.slice(prefix.length) : name);
  label.title = name;
  m = {
    div,
    rps: el('span', 'rps', '–'),
    errors: el('span', 'errors', '–'),
    p50: el('span', 'p50', '–'),
    p99: el('span', 'p99', '–'),
    rpsChart: chart('rps-chart', ['line']),
    latChart: chart('lat-chart', ['p50-line', 'p99-line']),
    hist: { rps: [], p50: [], p99: [] },
  };
  const group = (...kids) => { const g = el('span', 'metric'); g.append(...kids); return g; };
  div.append(
    label,
    group(m.rpsChart.svg, m.rps, el('span', 'unit', ' req/s')),
    group(el('span', 'unit', 'errors '), m.errors),
    group(m.latChart.svg, el('span', 'unit p50-key', 'p50 '), m.p50, el('span', 'unit p99-key', ' p99 '), m.p99),
  );
  view.methods.set(name, m);
  return m;
}

function updateMethod(m, s) {
  setText(m.rps, s.known ? fmtRate(s.rps) : '–');
  setText(m.errors, fmtPct(s.errPct));
  setText(m.p50, fmtDur(s.p50));
  setText(m.p99, fmtDur(s.p99));
  // History: a point per tick with data; latency gaps (null) when there were no calls.
  if (s.known) {
    push(m.hist.rps, s.rps);
    push(m.hist.p50, Number.isFinite(s.p50) ? s.p50 * 1e3 : null);
    push(m.hist.p99, Number.isFinite(s.p99) ? s.p99 * 1e3 : null);
  }
  drawChart(m.rpsChart, [m.hist.rps], 'req/s');
  drawChart(m.latChart, [m.hist.p50, m.hist.p99], 'ms');
}

// Brings the page in line with `list` and `admins`; returns the total requests/s.
function render() {
  let total = 0;
  const services = [...list.services].sort(byKey('service'));
  const sections = [];
  for (const svc of services) {
    const view = serviceView(svc.service);
    sections.push(view.section);
    const insts = [...svc.instances].sort(byKey('id'));
    setText(view.count, ` ${insts.length} instance${insts.length === 1 ? '' : 's'}`);

    const seen = new Set();
    const rows = [];
    for (const inst of insts) {
      if (seen.has(inst.id)) continue;  // one row per id
      seen.add(inst.id);
      const r = instanceRow(view, svc.service, inst);
      updateInstanceRow(r, svc.service, inst);
      rows.push(r.tr);
    }
    for (const id of view.rows.keys()) if (!seen.has(id)) view.rows.delete(id);
    placeInOrder(view.tbody, rows);

    // Methods: every method of this service in the last good sample of any instance.
    const addrs = adminsOf(svc);
    const names = new Set();
    for (const addr of addrs) {
      const last = admins.get(addr)?.last;
      if (last) for (const [n, m] of last.methods) if (m.service === svc.service) names.add(n);
    }
    const sorted = [...names].sort();
    const divs = sorted.map((name) => {
      const m = methodView(view, name);
      const s = methodStats(name, addrs);
      updateMethod(m, s);
      if (s.known) total += s.rps;
      return m.div;
    });
    for (const name of view.methods.keys()) if (!names.has(name)) view.methods.delete(name);
    placeInOrder(view.methodsDiv, divs);
  }
  const present = new Set(services.map((s) => s.service));
  for (const name of views.keys()) if (!present.has(name)) views.delete(name);

  const main = document.getElementById('services');
  const empty = document.getElementById('empty');
  setText(empty, services.length ? '' : 'No services registered.');
  empty.hidden = services.length > 0;
  placeInOrder(main, [empty, ...sections]);
  return total;
}

// ---- the poll loop -------------------------------------------------------------------

function showBanner(text) {
  const b = document.getElementById('banner');
  setText(b, text);
  b.hidden = !text;
}

// Normalises /api/instances, so render() can trust the shape.
function cleanList(body) {
  const services = (Array.isArray(body.services) ? body.services : []).map((s) => ({
    service: String(s.service),
    instances: (Array.isArray(s.instances) ? s.instances : []).map((i) => ({
      id: String(i.id),
      addr: String(i.addr),
      admin_addr: i.admin_addr ? String(i.admin_addr) : null,
      metadata: i.metadata,
      lease: i.lease || null,
    })),
  }));
  return { source: String(body.source ?? ''), services };
}

async function tick() {
  const res = await getJSON('/api/instances');
  if (res.ok) {
    list = cleanList(res.body);
    showBanner('');
  } else {
    showBanner(`cannot reach /api/instances: ${res.error}`);  // keep the last list
  }
  if (!list) return;

  // Forget endpoints no longer listed; fetch each listed one once.
  const addrs = new Set(list.services.flatMap(adminsOf));
  for (const a of admins.keys()) if (!addrs.has(a)) admins.delete(a);
  await Promise.all([...addrs].map(async (addr) => {
    const r = await getJSON(`${adminBase(addr)}/api/stats`);
    const st = admins.get(addr) || { ok: false, error: '', last: null, delta: null };
    admins.set(addr, st);
    st.ok = r.ok;
    st.delta = null;
    if (!r.ok) { st.error = r.error; return; }  // keep `last`: the next success diffs against it
    const cur = toSample(r.body, r.t);
    st.delta = st.last ? diff(st.last, cur) : null;
    st.last = cur;
  }));

  const total = render();
  setText(document.getElementById('source'), list.source || '–');
  setText(document.getElementById('total-rps'), fmtRate(total));
  setText(document.getElementById('updated'), new Date().toLocaleTimeString());
}

async function loop() {
  const started = performance.now();
  try {
    await tick();
  } catch (e) {
    // A bug in rendering must not stop the polling.
    console.error(e);
    showBanner(`dashboard error: ${e && e.message || e}`);
  }
  const wait = Math.max(100, POLL_MS - (performance.now() - started));
  setTimeout(loop, wait);
}

loop();
