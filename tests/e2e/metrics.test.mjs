// metrics.test.mjs: GET /metrics in the Prometheus text format, its values checked against
// the traffic just sent and the ledger it was recorded in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';

const ctx = useGateway();

// Parses the exposition text into { 'name{labels}': value }.
function parse(text) {
    const out = {};
    for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        const i = line.lastIndexOf(' ');
        out[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return out;
}

function sum(series, name, pred = () => true) {
    return Object.entries(series)
        .filter(([k]) => (k === name || k.startsWith(name + '{')) && pred(k))
        .reduce((a, [, v]) => a + v, 0);
}

test('metrics: request, token and cost counters equal the traffic and the ledger', T, async () => {
    const { gw } = ctx;
    const project = 'metrics-' + Date.now();
    const created = await gw.adminFetch('/v1/organization/projects', { body: { name: project } });
    assert.equal(created.status, 200, created.text);
    const key = await gw.createKey(project, 'metrics');
    const c = gw.client(key, { maxRetries: 0 });
    const ids = [];
    for (let i = 0; i < 3; i++) {
        ids.push((await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('m ' + i) }).withResponse()).request_id);
    }
    const s = await c.chat.completions.create({ model: 'mock-small', messages: msg('stream'), stream: true }).withResponse();
    for await (const _ of s.data) void _;
    ids.push(s.request_id);
    const failed = await c.chat.completions.create({ model: 'fail-500', messages: msg('x') }).withResponse().catch((e) => e);
    assert.equal(failed.status, 500);
    ids.push(failed.requestID);

    const rows = [];
    for (const id of ids) rows.push(...(await gw.waitLedger(id)));
    const r = await fetch(`${gw.url}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await r.text();
    assert.match(text, /^# TYPE tollgate_requests_total counter$/m);
    assert.match(text, /^# TYPE tollgate_request_duration_seconds histogram$/m);
    const m = parse(text);
    const mine = (k) => k.includes(`project="${created.json.id}"`);
    assert.equal(sum(m, 'tollgate_requests_total', mine), 5);
    assert.equal(sum(m, 'tollgate_requests_total', (k) => mine(k) && k.includes('status="200"')), 4);
    assert.equal(sum(m, 'tollgate_requests_total', (k) => mine(k) && k.includes('status="500"')), 1);
    const ledgerSum = (f) => rows.reduce((a, x) => a + Number(x[f]), 0);
    const tokens = (kind) => sum(m, 'tollgate_tokens_total', (k) => mine(k) && k.includes(`kind="${kind}"`));
    assert.equal(tokens('prompt'), ledgerSum('prompt_tokens'));
    assert.equal(tokens('completion'), ledgerSum('completion_tokens'));
    assert.equal(sum(m, 'tollgate_cost_micro_dollars_total', mine), ledgerSum('cost_micros'));
    // Histograms: cumulative buckets ending in +Inf equal to _count.
    const buckets = Object.entries(m).filter(([k]) => k.startsWith('tollgate_request_duration_seconds_bucket{') && mine(k));
    const inf = buckets.filter(([k]) => k.includes('le="+Inf"')).reduce((a, [, v]) => a + v, 0);
    assert.equal(inf, sum(m, 'tollgate_request_duration_seconds_count', mine));
    assert.equal(inf, 5);
});

shutdownTest(ctx);
