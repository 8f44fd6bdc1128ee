// Runs the real Worker entry (deploy/cloudflare/src/entry.py, bundled by build.py) inside
// Pyodide in Node, with Miniflare's local D1, KV and Queues as its bindings, and serves it
// over HTTP so pytest can drive it like a deployed Worker.
//
//   node harness.mjs '{"bundle": DIR, "sdk": DIR, "standins": DIR, "migrations": DIR,
//                      "vars": {...}}'
//
// Prints one JSON line {"ready": true, "port": N, "timings": {...}} once serving.
// Miniflare's queue consumer is a tiny JS worker that forwards each batch to Python's
// `queue()` through a service binding (a Node function) and applies the Python handler's
// ack/retry decisions to the real messages. Durable Objects cannot run Python in
// Miniflare, so LIMITER is a stand-in namespace that runs the real Python LimiterObject
// in this same Pyodide with an in-memory storage.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { Miniflare } from "miniflare";
import { loadPyodide } from "pyodide";

const cfg = JSON.parse(process.argv[2]);
const t = {};
const now = () => performance.now();
const stats = { batches: 0, messages: 0, acked: 0, retried: 0, pyErrors: [] };
let py, entry;

const JS_CONSUMER = `
export default {
  async fetch() { return new Response("consumer only"); },
  async queue(batch, env) {
    const messages = batch.messages.map((m) => ({ id: m.id, body: m.body, attempts: m.attempts }));
    const res = await env.PY.fetch("http://python/queue", {
      method: "POST", body: JSON.stringify({ queue: batch.queue, messages }) });
    const outcomes = await res.json();
    for (const m of batch.messages) {
      const o = outcomes[m.id];
      if (o && o.outcome === "ack") m.ack();
      else m.retry(o && o.delaySeconds ? { delaySeconds: 0 } : undefined); // no waiting in tests
    }
  },
};`;

function makeCtx() {
  const pending = [];
  return {
    ctx: { waitUntil: (p) => { pending.push(Promise.resolve(p).catch((e) => stats.pyErrors.push(String(e)))); },
           passThroughOnException() {}, props: {} },
    settle: () => Promise.all(pending),
  };
}

async function pyQueue(request) {
  const data = await request.json();
  const outcomes = {};
  const messages = data.messages.map((m) => ({
    id: m.id, body: m.body, attempts: m.attempts,
    ack() { outcomes[m.id] = { outcome: "ack" }; },
    retry(opts) { outcomes[m.id] = { outcome: "retry", delaySeconds: opts?.delaySeconds ?? 0 }; },
  }));
  const batch = {
    queue: data.queue, messages,
    ackAll() { messages.forEach((m) => m.ack()); },
    retryAll(opts) { messages.forEach((m) => m.retry(opts)); },
  };
  const { ctx, settle } = makeCtx();
  try {
    await entry.Default(ctx, env).queue(batch);
    await settle();
  } catch (e) {
    stats.pyErrors.push(String(e));
  }
  stats.batches += 1; stats.messages += messages.length;
  for (const o of Object.values(outcomes)) o.outcome === "ack" ? stats.acked++ : stats.retried++;
  return Response.json(outcomes);
}

// -- Miniflare ---------------------------------------------------------------------
t.miniflare_start = now();
const mf = new Miniflare({
  modules: true,
  script: JS_CONSUMER,
  compatibilityDate: "2025-09-01",
  d1Databases: ["DB"],
  kvNamespaces: ["CACHE"],
  queueProducers: { EVENTS: { queueName: "watchllm-events" },
                    EVENTS_DLQ: { queueName: "watchllm-events-dlq" } },
  queueConsumers: { "watchllm-events": { maxBatchSize: 50, maxBatchTimeout: 1, maxRetries: 3,
                                         deadLetterQueue: "watchllm-events-dlq" } },
  serviceBindings: { PY: pyQueue },
});
const bindings = await mf.getBindings();
t.miniflare_ms = now() - t.miniflare_start;

// D1 migrations, as `wrangler d1 migrations apply` would run them.
for (const file of fs.readdirSync(cfg.migrations).filter((f) => f.endsWith(".sql")).sort()) {
  const text = fs.readFileSync(path.join(cfg.migrations, file), "utf8")
    .split("\n").filter((l) => !l.startsWith("--")).join("\n");
  const stmts = text.split(";").map((s) => s.trim()).filter(Boolean);
  await bindings.DB.batch(stmts.map((s) => bindings.DB.prepare(s)));
}

// -- LIMITER: the Python Durable Object class, one instance per name -----------------
const objects = new Map();
const LIMITER = {
  idFromName: (name) => ({ name, toString: () => name }),
  get(id) {
    const name = String(id.name);
    if (!objects.has(name)) {
      const store = new Map();
      const state = { storage: { get: async (k) => store.get(k), put: async (k, v) => { store.set(k, v); } },
                      waitUntil() {}, id };
      objects.set(name, { instance: entry.LimiterObject(state, env), queue: Promise.resolve() });
    }
    const obj = objects.get(name);
    return {
      // Requests to one object run one at a time, like a Durable Object's input gate.
      fetch: (url, init) => {
        const run = obj.queue.then(() => obj.instance.fetch(new Request(url, init)));
        obj.queue = run.catch(() => {});
        return run;
      },
    };
  },
};

const env = globalThis.harnessEnv = { ...cfg.vars, DB: bindings.DB, CACHE: bindings.CACHE, EVENTS: bindings.EVENTS,
              EVENTS_DLQ: bindings.EVENTS_DLQ, LIMITER };

// -- Pyodide -------------------------------------------------------------------------
t.pyodide_start = now();
py = await loadPyodide();
t.pyodide_load_ms = now() - t.pyodide_start;
py.FS.mkdirTree("/session/metadata");
for (const [dir, at] of [[cfg.bundle, "/bundle"], [cfg.sdk, "/sdk"], [cfg.standins, "/standins"]]) {
  py.FS.mkdirTree(at);
  py.FS.mount(py.FS.filesystems.NODEFS, { root: dir }, at);
}
py.runPython(`import sys; sys.path[:0] = ["/bundle", "/sdk", "/standins"]`);
t.import_start = now();
entry = py.pyimport("entry");
t.app_import_ms = now() - t.import_start;

// -- HTTP front door -------------------------------------------------------------------
let firstRequest = true;
const server = http.createServer(async (req, res) => {
  try {
    if (req.url === "/__harness/stats") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ...stats, timings: t })); return;
    }
    if (req.url === "/__harness/limiter") {  // Counters -> LIMITER -> Python LimiterObject
      const out = await py.runPythonAsync(`
import json, js
from watchllm.env.cloudflare.limiter import DurableObjectCounters
from watchllm.limits.ops import RATE, Op
c = DurableObjectCounters(js.harnessEnv.LIMITER)
ops = [Op(RATE, "wl:{proj_dob}:rpm", 2, 60_000)]
json.dumps([(await c.apply(ops, 1000)).allowed for _ in range(3)] + [await c.incr("wl:{p}:n", 2, 60)])`);
      res.writeHead(200, { "content-type": "application/json" }); res.end(out); return;
    }
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = chunks.length ? Buffer.concat(chunks) : null;
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
    const request = new Request(`http://${req.headers.host}${req.url}`,
      { method: req.method, headers, body: ["GET", "HEAD"].includes(req.method) ? undefined : body });
    const { ctx, settle } = makeCtx();
    const started = now();
    const response = await entry.Default(ctx, env).fetch(request);
    if (firstRequest) { t.first_request_ms = now() - started; firstRequest = false; }
    res.writeHead(response.status, Object.fromEntries(response.headers.entries()));
    if (response.body) for await (const chunk of response.body) res.write(chunk);
    res.end();
    settle();
  } catch (e) {
    stats.pyErrors.push(String(e?.stack || e));
    if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
    res.end(String(e));
  }
});
server.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ ready: true, port: server.address().port, timings: t }));
});
const stop = async () => { server.close(); await mf.dispose(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
