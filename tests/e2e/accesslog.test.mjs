// accesslog.test.mjs: the access log (access_log: in the config): one JSON line per request
// with the ids, tokens and cost of its ledger row; never the key, never the prompt or the
// answer unless the project turns body logging on; SIGHUP reopens the file (rotation); and
// the line of a request still running when a graceful stop begins is written before the
// process exits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useGateway, T, msg } from './lib/setup.mjs';
import { SLOW, TG_KEY_RE, upstreamLeaks } from './lib/gateway.mjs';

const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-accesslog-'));
const logPath = path.join(logDir, 'access.log');

const ctx = useGateway({ gateway: { extraYaml: `access_log:\n  path: ${logPath}\n  queue: 1000\n` } });

function readLines() {
    if (!fs.existsSync(logPath)) return [];
    const text = fs.readFileSync(logPath, 'utf8');
    assert.ok(text === '' || text.endsWith('\n'), 'whole lines only');
    return text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l));
}

// The lines of these request ids once each has one (bounded wait: the writer is a thread).
async function linesOf(ids) {
    const end = Date.now() + 10000 * SLOW;
    for (;;) {
        const lines = readLines().filter((l) => ids.includes(l.request_id));
        if (ids.every((id) => lines.some((l) => l.request_id === id))) return lines;
        assert.ok(Date.now() < end, `${lines.length} of ${ids.length} access log lines`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

async function newProject(gw, name) {
    const r = await gw.adminFetch('/v1/organization/projects', { body: { name: `${name}-${Date.now()}` } });
    assert.equal(r.status, 200, r.text);
    return r.json;
}

test('access log: one line per request with its ids, tokens and cost as in the ledger; no key, no prompt', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, 'al');
    const key = await gw.createKeyObject(p.id, 'al');
    const c = gw.client(key.value, { maxRetries: 0 });
    const secretWords = 'violet-harbor-quietly';
    const a = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg(`first ${secretWords}`) }).withResponse();
    const s = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg(`second ${secretWords}`), stream: true }).withResponse();
    for await (const _ of s.data) void _;
    const bad = await c.chat.completions.create({ model: 'fail-500', messages: msg(secretWords) }).withResponse().catch((e) => e);
    assert.equal(bad.status, 500);
    const ids = [a.request_id, s.request_id, bad.requestID];
    const lines = await linesOf(ids);
    assert.equal(lines.length, 3, 'one line per request');
    for (const id of ids) {
        const [row] = await gw.waitLedger(id);
        const line = lines.find((l) => l.request_id === id);
        assert.match(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
        assert.equal(line.key_id, key.id);
        assert.equal(line.project_id, p.id);
        assert.equal(line.org_id, row.org_id);
        assert.equal(line.endpoint, 'chat.completions');
        assert.equal(line.model, row.model_requested);
        assert.equal(line.provider, row.provider);
        assert.equal(line.deployment, row.deployment);
        assert.equal(line.status, row.status);
        assert.equal(line.prompt_tokens, Number(row.prompt_tokens));
        assert.equal(line.cached_tokens, Number(row.cached_tokens));
        assert.equal(line.completion_tokens, Number(row.completion_tokens));
        assert.equal(line.reasoning_tokens, Number(row.reasoning_tokens));
        assert.equal(line.cost_micros, Number(row.cost_micros));
        assert.equal(line.latency_ms, Number(row.latency_ms));
        assert.equal(line.usage_estimated, false);
        assert.equal(line.request_body, undefined);
        assert.equal(line.response_body, undefined);
    }
    const ok = lines.find((l) => l.request_id === a.request_id);
    assert.equal(ok.status, 200);
    assert.equal(ok.stream, false);
    assert.equal(ok.finish_reason, 'stop');
    assert.equal(ok.cache, null);
    assert.ok(Number.isInteger(ok.ttft_ms) && ok.ttft_ms >= 0);
    assert.ok(ok.cost_micros > 0 && ok.prompt_tokens > 0);
    // Measured on the monotonic clock, latency on the wall clock: each rounded to ms, so they
    // are not compared.
    assert.ok(Number.isInteger(ok.upstream_ms) && ok.upstream_ms >= 0);
    assert.equal(lines.find((l) => l.request_id === s.request_id).stream, true);
    const failed = lines.find((l) => l.request_id === bad.requestID);
    assert.equal(failed.status, 500);
    assert.equal(typeof failed.error, 'string');
    const text = fs.readFileSync(logPath, 'utf8');
    assert.ok(!text.includes(key.value), 'the key never appears');
    assert.ok(!TG_KEY_RE.test(text), 'no key-shaped text at all');
    assert.ok(!text.includes(secretWords), 'neither the prompt nor the answer (which echoes it)');
});

test('access log: bodies appear once the project turns body logging on, and only for that project', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, 'al-bodies');
    const other = await newProject(gw, 'al-quiet');
    const c = gw.client(await gw.createKey(p.id, 'b'), { maxRetries: 0 });
    const q = gw.client(await gw.createKey(other.id, 'q'), { maxRetries: 0 });
    const before = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('before amber-lantern') }).withResponse();

    const bad = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { logging: { bodies: 'yes' } } });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.json.error.param, 'logging');
    const on = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { logging: { bodies: true } } });
    assert.equal(on.status, 200, on.text);
    assert.deepEqual(on.json.logging, { bodies: true });

    const json = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('logged copper-meadow') }).withResponse();
    const s = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('streamed copper-meadow'), stream: true }).withResponse();
    for await (const _ of s.data) void _;
    const quiet = await q.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('quiet copper-meadow') }).withResponse();
    const lines = await linesOf([before.request_id, json.request_id, s.request_id, quiet.request_id]);
    const of = (id) => lines.find((l) => l.request_id === id);

    assert.equal(of(before.request_id).request_body, undefined, 'not before the change');
    assert.equal(of(quiet.request_id).request_body, undefined, 'not for another project');
    const j = of(json.request_id);
    assert.equal(JSON.parse(j.request_body).messages[0].content, 'logged copper-meadow');
    assert.equal(JSON.parse(j.response_body).choices[0].message.content, 'echo: logged copper-meadow');
    const st = of(s.request_id);
    assert.match(st.request_body, /streamed copper-meadow/);
    assert.match(st.response_body, /^data: /m);
    assert.match(st.response_body, /copper-meadow/);

    const off = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { logging: { bodies: false } } });
    assert.equal(off.status, 200, off.text);
    const after = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('after') }).withResponse();
    const [last] = await linesOf([after.request_id]);
    assert.equal(last.request_body, undefined, 'off again');
});

test('access log: a cache miss reads "miss"; the hit after it "hit", from provider "cache", at no cost', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, 'al-cache');
    const on = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { cache: { enabled: true } } });
    assert.equal(on.status, 200, on.text);
    const c = gw.client(await gw.createKey(p.id, 'c'), { maxRetries: 0 });
    const body = { model: 'gpt-4o-mini', messages: msg('cache this line') };
    const first = await c.chat.completions.create(body).withResponse();
    const second = await c.chat.completions.create(body).withResponse();
    assert.equal(second.response.headers.get('x-tollgate-cache'), 'hit');
    const lines = await linesOf([first.request_id, second.request_id]);
    const miss = lines.find((l) => l.request_id === first.request_id);
    const hit = lines.find((l) => l.request_id === second.request_id);
    assert.equal(miss.cache, 'miss');
    assert.ok(miss.cost_micros > 0);
    assert.equal(hit.cache, 'hit');
    assert.equal(hit.provider, 'cache');
    assert.equal(hit.cost_micros, 0);
    assert.equal(hit.upstream_ms, null, 'nothing went upstream');
    assert.equal(hit.status, 200);
});

test('access log: SIGHUP after the file was renamed (log rotation) writes the next lines to a new file', T, async () => {
    const { gw } = ctx;
    const c = gw.client(await gw.createKey('development', 'rotate'), { maxRetries: 0 });
    const a = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('before rotation') }).withResponse();
    await linesOf([a.request_id]);
    const rotated = logPath + '.1';
    fs.renameSync(logPath, rotated);
    const mark = gw.out.length;
    gw.proc.kill('SIGHUP');
    // The signal is handled on the main thread: wait until it says so (bounded).
    const end = Date.now() + 10000 * SLOW;
    while (!gw.out.slice(mark).includes('received SIGHUP')) {
        assert.ok(Date.now() < end, 'SIGHUP not handled');
        await new Promise((r) => setTimeout(r, 20));
    }
    const b = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('after rotation') }).withResponse();
    const [line] = await linesOf([b.request_id]);
    assert.equal(line.status, 200);
    assert.ok(fs.readFileSync(rotated, 'utf8').includes(a.request_id), 'the old lines stay in the renamed file');
    assert.ok(!fs.readFileSync(rotated, 'utf8').includes(b.request_id), 'the new line is not in it');
    assert.equal((await fetch(`${gw.url}/readyz`)).status, 200, 'SIGHUP does not stop the gateway');
});

test('access log: a request running when a graceful stop begins has its line when the process exits', { timeout: 60000 * SLOW }, async () => {
    const { gw, up } = ctx;
    const c = gw.client(await gw.createKey('development', 'stop'), { maxRetries: 0 });
    // slow-stream: the first chunk, then the upstream holds until released.
    const s = await c.chat.completions
        .create({ model: 'gpt-4o-mini', messages: msg('held'), stream: true, user: 'behaviour:slow-stream' })
        .withResponse();
    const it = s.data[Symbol.asyncIterator]();
    assert.equal((await it.next()).done, false, 'the stream started');
    const leaks = upstreamLeaks(up.requests, {
        upstreamKey: ctx.upstreamKey,
        azureKey: ctx.azureKey,
        clientKeys: [...gw.clientKeys, gw.adminKey].filter(Boolean),
    });
    const stopped = gw.stopAndCheck();
    // Not ready any more: the stop has begun while the stream is still open.
    const end = Date.now() + 10000 * SLOW;
    while ((await fetch(`${gw.url}/readyz`).then((r) => r.status).catch(() => 0)) === 200) {
        assert.ok(Date.now() < end, 'still ready');
        await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(readLines().filter((l) => l.request_id === s.request_id).length, 0, 'not written before it ends');
    up.release();
    for (let n = await it.next(); !n.done; n = await it.next());
    await stopped;
    assert.deepEqual(leaks, []);
    const line = readLines().find((l) => l.request_id === s.request_id);
    assert.ok(line, 'the line of the request that finished during the stop');
    assert.equal(line.status, 200);
    assert.equal(line.stream, true);
    assert.ok(line.completion_tokens > 0);
    fs.rmSync(logDir, { recursive: true, force: true });
});
