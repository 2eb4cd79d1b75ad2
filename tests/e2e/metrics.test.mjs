// metrics.test.mjs: GET /metrics in the Prometheus text format, its values checked against
// the traffic just sent and the ledger it was recorded in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { startGateway, SLOW } from './lib/gateway.mjs';

// A route whose first deployment always fails (the scripted upstream's fail-500) and whose
// second serves: calls succeed while the first deployment's breaker counts the failures.
const P = { input: '1', cached_input: '0.5', output: '4' };
const MODELS = `  - name: mt-breaker
    deployments:
      - {provider: up, upstream_model: fail-500}
      - {provider: up, upstream_model: gpt-4o-mini, priority: 1}
    retry: {max_attempts: 3, backoff_ms: 5}
    breaker: {failures: 2, error_rate_pct: 50, window_ms: 600000, open_ms: 600000}
`;

const ctx = useGateway({ gateway: { models: MODELS, prices: { 'mt-breaker': P } } });

async function scrape(gw, headers = {}) {
    const r = await fetch(`${gw.url}/metrics`, { headers });
    assert.equal(r.status, 200);
    return parse(await r.text());
}

async function newProject(gw, name) {
    const created = await gw.adminFetch('/v1/organization/projects', { body: { name: name + '-' + Date.now() } });
    assert.equal(created.status, 200, created.text);
    return created.json;
}

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

test('metrics: refusals, cache hits and savings, and the overhead histogram after known traffic', T, async () => {
    const { gw } = ctx;
    const mine = (p) => (k) => k.includes(`project="${p.id}"`);

    // Rate limit: one request a minute on gpt-4o-mini; the second is refused.
    const rl = await newProject(gw, 'metrics-rl');
    const lim = await gw.adminFetch(`/v1/organization/projects/${rl.id}/rate_limits/rl-gpt-4o-mini`, { body: { max_requests_per_1_minute: 1 } });
    assert.equal(lim.status, 200, lim.text);
    const rc = gw.client(await gw.createKey(rl.id, 'rl'), { maxRetries: 0 });
    await rc.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('one') });
    const refused = await rc.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('two') }).catch((e) => e);
    assert.equal(refused.status, 429);

    // Budget: a limit of one micro-dollar refuses any priced call.
    const bp = await newProject(gw, 'metrics-broke');
    const set = await gw.adminFetch(`/v1/organization/projects/${bp.id}/budget`, { body: { monthly_limit: '0.000001' } });
    assert.equal(set.status, 200, set.text);
    const bc = gw.client(await gw.createKey(bp.id, 'broke'), { maxRetries: 0 });
    const broke = await bc.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('spend') }).catch((e) => e);
    assert.equal(broke.status, 429);
    assert.equal(broke.code, 'insufficient_quota');

    // Cache: the same request twice; the second is a hit worth the first's cost.
    const cp = await newProject(gw, 'metrics-cache');
    const on = await gw.adminFetch(`/v1/organization/projects/${cp.id}`, { body: { cache: { enabled: true } } });
    assert.equal(on.status, 200, on.text);
    const cc = gw.client(await gw.createKey(cp.id, 'cache'), { maxRetries: 0 });
    const body = { model: 'gpt-4o-mini', messages: msg('cache me') };
    const first = await cc.chat.completions.create(body).withResponse();
    const second = await cc.chat.completions.create(body).withResponse();
    assert.equal(second.response.headers.get('x-tollgate-cache'), 'hit');
    const [row] = await gw.waitLedger(first.request_id);
    await gw.waitLedger(second.request_id);

    const m = await scrape(gw);
    assert.equal(m[`tollgate_rate_limited_total{project="${rl.id}"}`], 1);
    assert.equal(m[`tollgate_budget_refused_total{project="${bp.id}"}`], 1);
    assert.equal(m[`tollgate_budget_refused_total{project="${rl.id}"}`], undefined);
    assert.equal(sum(m, 'tollgate_requests_total', mine(rl)), 1, 'a refusal is not an answered request');
    assert.equal(sum(m, 'tollgate_cache_hits_total', mine(cp)), 1);
    assert.equal(sum(m, 'tollgate_cache_hits_total', (k) => mine(cp)(k) && k.includes('provider="cache"')), 1);
    assert.equal(sum(m, 'tollgate_cache_saved_micro_dollars_total', mine(cp)), Number(row.cost_micros));
    assert.ok(Number(row.cost_micros) > 0);
    // The hit cost nothing: the project's cost is the first call's alone.
    assert.equal(sum(m, 'tollgate_cost_micro_dollars_total', mine(cp)), Number(row.cost_micros));
    // Upstream time and the gateway's own time: one observation per call that went upstream
    // (the miss), none for the hit; the total counts both.
    assert.equal(sum(m, 'tollgate_upstream_duration_seconds_count', mine(cp)), 1);
    assert.equal(sum(m, 'tollgate_gateway_overhead_seconds_count', mine(cp)), 1);
    assert.equal(sum(m, 'tollgate_request_duration_seconds_count', mine(cp)), 2);
});

test('metrics: budget use of a project equals the ledger cost of its priced calls; the limit is its budget', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, 'metrics-budget');
    const set = await gw.adminFetch(`/v1/organization/projects/${p.id}/budget`, { body: { monthly_limit: '10' } });
    assert.equal(set.status, 200, set.text);
    const spendKey = `tollgate_project_budget_spend_micro_dollars{project="${p.id}"}`;
    const limitKey = `tollgate_project_budget_limit_micro_dollars{project="${p.id}"}`;
    let m = await scrape(gw);
    assert.equal(m[spendKey], 0);
    assert.equal(m[limitKey], 10000000);
    const c = gw.client(await gw.createKey(p.id, 'budget'), { maxRetries: 0 });
    const ids = [];
    for (let i = 0; i < 3; i++) {
        ids.push((await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('spend ' + 'x '.repeat(i)) }).withResponse()).request_id);
    }
    let cost = 0;
    for (const id of ids) for (const row of await gw.waitLedger(id)) cost += Number(row.cost_micros);
    assert.ok(cost > 0, 'priced calls cost something');
    m = await scrape(gw);
    assert.equal(m[spendKey], cost);
    assert.equal(m[limitKey], 10000000);
    // A project without a budget has a spend line and no limit line.
    const free = await newProject(gw, 'metrics-nobudget');
    m = await scrape(gw);
    assert.equal(m[`tollgate_project_budget_spend_micro_dollars{project="${free.id}"}`], 0);
    assert.equal(m[`tollgate_project_budget_limit_micro_dollars{project="${free.id}"}`], undefined);
});

test('metrics: a deployment\'s breaker reads closed, then open once the upstream failed enough times', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, 'metrics-breaker');
    const c = gw.client(await gw.createKey(p.id, 'breaker'), { maxRetries: 0 });
    const line = (state) => `tollgate_deployment_breaker_state{model="mt-breaker",provider="up",deployment="fail-500",state="${state}"}`;
    const good = (state) => `tollgate_deployment_breaker_state{model="mt-breaker",provider="up",deployment="gpt-4o-mini",state="${state}"}`;
    let m = await scrape(gw);
    assert.equal(m[line('closed')], 1);
    assert.equal(m[line('open')], 0);
    assert.equal(m[line('half_open')], 0);
    // Each call fails on fail-500 once, then is served by the second deployment.
    for (let i = 0; i < 2; i++) {
        const r = await c.chat.completions.create({ model: 'mt-breaker', messages: msg('b ' + i) });
        assert.match(r.choices[0].message.content, /^echo: /);
    }
    m = await scrape(gw);
    assert.equal(m[line('open')], 1);
    assert.equal(m[line('closed')], 0);
    assert.equal(m[good('closed')], 1);
    // The admin API agrees.
    const ds = (await gw.adminFetch('/v1/organization/deployments?limit=100')).json.data.filter((d) => d.model === 'mt-breaker');
    assert.deepEqual(ds.map((d) => d.breaker), ['open', 'closed']);
    // Requests counted by deployment: the failed attempts' 500s are not client answers.
    assert.equal(sum(m, 'tollgate_requests_total', (k) => k.includes(`project="${p.id}"`) && k.includes('deployment="gpt-4o-mini"') && k.includes('status="200"')), 2);
});

test('metrics: scrapes while requests run answer whole texts (or a clear 503 past the bound), and the counts add up afterwards', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, 'metrics-load');
    const c = gw.client(await gw.createKey(p.id, 'load'), { maxRetries: 0 });
    const calls = [];
    for (let i = 0; i < 30; i++) {
        calls.push(c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('load ' + i), stream: i % 2 === 0 }).then(async (r) => {
            if (r[Symbol.asyncIterator]) for await (const _ of r) void _;
        }));
    }
    const scrapes = [];
    for (let i = 0; i < 10; i++) scrapes.push(fetch(`${gw.url}/metrics`).then(async (r) => ({ status: r.status, text: await r.text() })));
    await Promise.all(calls);
    const done = await Promise.all(scrapes);
    // At most a few scrapes are formatted at once (each holds a copy of the counters); one
    // past that bound gets a clear 503 in OpenAI's error shape, never a partial text.
    for (const s of done.filter((x) => x.status !== 200)) {
        assert.equal(s.status, 503);
        const e = JSON.parse(s.text).error;
        assert.equal(e.type, 'server_error');
        assert.match(e.message, /retry/);
    }
    const good = done.filter((x) => x.status === 200);
    assert.ok(good.length >= 1);
    for (const s of good) {
        assert.match(s.text, /^# TYPE tollgate_requests_total counter$/m);
        assert.match(s.text, /^# TYPE tollgate_deployment_breaker_state gauge$/m);
        for (const line of s.text.split('\n')) {
            if (line === '' || line.startsWith('#')) continue;
            assert.match(line, /^[a-z_]+(\{.*\})? -?[0-9]+(\.[0-9]+)?$/, line);
        }
    }
    // Every call is settled (ledger rows written) before the final count is read.
    const end = Date.now() + 10000 * SLOW;
    for (;;) {
        const rows = (await gw.readLedger()).filter((r) => r.project_id === p.id);
        if (rows.length >= 30) break;
        assert.ok(Date.now() < end, `${rows.length} of 30 ledger rows`);
        await new Promise((r) => setTimeout(r, 50));
    }
    const m = await scrape(gw);
    assert.equal(sum(m, 'tollgate_requests_total', (k) => k.includes(`project="${p.id}"`)), 30);
});

test('metrics: with metrics.bearer_token set, a scrape needs the token (401 in OpenAI error shape otherwise)', T, async () => {
    const token = 'scrape-' + crypto.randomBytes(12).toString('hex');
    const gw2 = await startGateway({
        upstream: ctx.up,
        upstreamKey: ctx.upstreamKey,
        azureKey: ctx.azureKey,
        extraYaml: 'metrics:\n  bearer_token: env:TG_TEST_METRICS_TOKEN\n',
        env: { TG_TEST_METRICS_TOKEN: token },
    });
    try {
        const none = await fetch(`${gw2.url}/metrics`);
        assert.equal(none.status, 401);
        const noneBody = await none.json();
        assert.equal(noneBody.error.type, 'invalid_request_error');
        assert.match(noneBody.error.message, /Authorization: Bearer/);
        for (const wrong of [`Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, 'Bearer ', token, `Basic ${token}`]) {
            const r = await fetch(`${gw2.url}/metrics`, { headers: { authorization: wrong } });
            assert.equal(r.status, 401, wrong);
            const body = await r.json();
            assert.equal(body.error.code, 'invalid_api_key');
            assert.ok(!JSON.stringify(body).includes(token), 'the token is never echoed');
        }
        // An admin key is not the scrape token either.
        assert.equal((await fetch(`${gw2.url}/metrics`, { headers: { authorization: `Bearer ${gw2.adminKey}` } })).status, 401);
        const ok = await fetch(`${gw2.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
        assert.equal(ok.status, 200);
        assert.match(await ok.text(), /^# TYPE tollgate_requests_total counter$/m);
        // Health and readiness stay open.
        assert.equal((await fetch(`${gw2.url}/healthz`)).status, 200);
    } finally {
        await gw2.stopAndCheck();
        gw2.cleanup();
    }
    assert.ok(!gw2.out.includes(token), 'the token is not logged');
});

shutdownTest(ctx);
