// routing.test.mjs: model routes with several deployments (policy/router.h) on the scripted
// upstream, whose misbehaviour is chosen by the model name each deployment sends: weights
// spread traffic; a failing deployment is retried on another without the client noticing
// (the SDK, with its own retries off, sees 200; the ledger has one row per attempt); a 429
// cools its deployment down; the breaker opens after its failures and half-opens after
// open_ms; a route whose deployments fail falls back to another model, priced as that model;
// nothing is retried once the first byte has reached the client; a deployment's own
// first_byte_ms times it out and the retry goes to the other deployment; GET
// /v1/organization/deployments shows the state. The az provider's key variable is left
// unset here: the gateway starts anyway, says so once at start, never picks az's
// deployments, answers 503 naming the provider and variable when nothing else can serve,
// and the deployments route shows them unavailable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { expectedCost, PRICES, SLOW } from './lib/gateway.mjs';

const P = { input: '1', cached_input: '0.5', output: '4' };
const FB_PRICE = { input: '3', cached_input: '1.5', output: '12' };

const MODELS = `  - name: rt-weights
    deployments:
      - {provider: up, upstream_model: w-heavy, weight: 3}
      - {provider: up, upstream_model: w-light, weight: 1}
  - name: rt-retry
    deployments:
      - {provider: up, upstream_model: fail-500}
      - {provider: up, upstream_model: gpt-4o-mini, priority: 1}
    retry: {max_attempts: 3, backoff_ms: 5}
    breaker: {failures: 2, error_rate_pct: 50, window_ms: 60000, open_ms: 1500}
  - name: rt-cool
    deployments:
      - {provider: up, upstream_model: fail-429}
      - {provider: up, upstream_model: gpt-4o-mini, priority: 1}
    retry: {backoff_ms: 1}
  - name: rt-fallback
    deployments:
      - {provider: dead, upstream_model: gone}
    fallbacks: [rt-fb-target]
    retry: {backoff_ms: 1}
  - name: rt-fb-target
    provider: up
    upstream_model: gpt-4o-mini
  - name: rt-cut
    deployments:
      - {provider: up, upstream_model: cut-stream}
      - {provider: up, upstream_model: gpt-4o-mini, priority: 1}
    retry: {backoff_ms: 1}
  - name: rt-timeout
    deployments:
      - {provider: up, upstream_model: slow-first-byte, timeouts: {first_byte_ms: 150}}
      - {provider: up, upstream_model: gpt-4o-mini, priority: 1}
    retry: {backoff_ms: 1}
  - name: rt-nokey
    deployments:
      - {provider: az, upstream_model: my-deployment, weight: 1000}
      - {provider: up, upstream_model: gpt-4o-mini, weight: 1}
  - name: rt-nokey-only
    provider: az
    upstream_model: my-deployment
`;

// expectedCost reads the shared price table; the gateway gets the same entries below.
Object.assign(PRICES, { 'rt-retry': P, 'rt-fallback': P, 'rt-fb-target': FB_PRICE });

const ctx = useGateway({
    gateway: {
        // TG_TEST_AZURE_KEY stays unset (node drops undefined variables from the child's
        // environment): provider az is unavailable from the start.
        azureKey: undefined,
        models: MODELS,
        prices: {
            'rt-weights': P,
            'rt-retry': P,
            'rt-cool': P,
            'rt-fallback': P,
            'rt-fb-target': FB_PRICE,
            'rt-cut': P,
            'rt-timeout': P,
            'rt-nokey': P,
            'rt-nokey-only': P,
        },
    },
});

// Every ledger row of a request once there are at least n of them (bounded wait).
async function rowsOf(gw, requestId, n) {
    const end = Date.now() + 10000 * SLOW;
    for (;;) {
        const rows = (await gw.readLedger()).filter((r) => r.request_id === requestId);
        if (rows.length >= n) return rows.sort((a, b) => a.attempt - b.attempt);
        if (Date.now() > end) throw new Error(`${rows.length} of ${n} ledger rows for ${requestId}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

async function deployments(gw, model) {
    const res = await gw.adminFetch('/v1/organization/deployments?limit=100');
    assert.equal(res.status, 200);
    const body = res.json;
    assert.equal(body.object, 'list');
    return body.data.filter((d) => d.model === model);
}

function usageOf(data) {
    const u = data.usage;
    return { prompt_tokens: u.prompt_tokens, cached_tokens: u.prompt_tokens_details.cached_tokens, completion_tokens: u.completion_tokens };
}

async function chat(gw, key, model, text) {
    return gw.client(key, { maxRetries: 0 }).chat.completions.create({ model, messages: msg(text) }).withResponse();
}

test('weights spread traffic between deployments', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('production', 'rt-w');
    const mark = up.mark();
    for (let i = 0; i < 80; i++) await chat(gw, key, 'rt-weights', `spread ${i}`);
    const seen = up.since(mark).map((r) => r.model);
    const heavy = seen.filter((m) => m === 'w-heavy').length;
    const light = seen.filter((m) => m === 'w-light').length;
    assert.equal(heavy + light, 80);
    // 3:1 expected (60 / 20); the bounds fail only far outside chance.
    assert.ok(heavy >= 45 && heavy <= 74, `heavy ${heavy}, light ${light}`);
    const ds = await deployments(gw, 'rt-weights');
    assert.deepEqual(ds.map((d) => [d.upstream_model, d.weight, d.breaker, d.outstanding]), [
        ['w-heavy', 3, 'closed', 0],
        ['w-light', 1, 'closed', 0],
    ]);
    assert.ok(ds.every((d) => d.strategy === 'weighted' && typeof d.ewma_ttft_ms === 'number'));
});

test('a failing deployment is retried on another: the client sees 200, the ledger 2 attempts', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('production', 'rt-r');
    const mark = up.mark();
    const { data, response, request_id } = await chat(gw, key, 'rt-retry', 'please retry me');
    assert.equal(response.status, 200);
    assert.equal(data.choices[0].message.content, 'echo: please retry me');
    assert.deepEqual(up.since(mark).map((r) => r.model), ['fail-500', 'gpt-4o-mini']);
    const rows = await rowsOf(gw, request_id, 2);
    assert.equal(rows.length, 2);
    assert.deepEqual(rows.map((r) => [r.attempt, r.deployment, r.status]), [
        [1, 'fail-500', 500],
        [2, 'gpt-4o-mini', 200],
    ]);
    assert.equal(rows[0].cost_micros, 0);
    assert.match(rows[0].error, /500/);
    assert.equal(rows[1].error, '');
    assert.equal(rows[1].cost_micros, expectedCost('rt-retry', usageOf(data)));
});

test('the breaker opens after its failures, skips the deployment, then half-opens', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('production', 'rt-b');
    // The previous test failed fail-500 once; one more failure (failures: 2) opens it.
    let { response } = await chat(gw, key, 'rt-retry', 'second failure');
    assert.equal(response.status, 200);
    let [bad] = await deployments(gw, 'rt-retry');
    assert.equal(bad.breaker, 'open');
    assert.ok(bad.breaker_open_until > Date.now() - 1000);
    // Open: requests go straight to the healthy deployment, one attempt each.
    const mark = up.mark();
    const r3 = await chat(gw, key, 'rt-retry', 'while open');
    assert.deepEqual(up.since(mark).map((r) => r.model), ['gpt-4o-mini']);
    assert.equal((await rowsOf(gw, r3.request_id, 1)).length, 1);
    // After open_ms (1.5 s) the breaker reads half-open (polled, bounded).
    const end = Date.now() + 5000 * SLOW;
    while ((bad = (await deployments(gw, 'rt-retry'))[0]).breaker !== 'half_open') {
        assert.ok(Date.now() < end, `still ${bad.breaker}`);
        await new Promise((r) => setTimeout(r, 100));
    }
    // One probe goes to the failing deployment; it fails, so the breaker opens again.
    const mark2 = up.mark();
    ({ response } = await chat(gw, key, 'rt-retry', 'probe'));
    assert.equal(response.status, 200);
    assert.deepEqual(up.since(mark2).map((r) => r.model), ['fail-500', 'gpt-4o-mini']);
    assert.equal((await deployments(gw, 'rt-retry'))[0].breaker, 'open');
});

test('a 429 is retried on another deployment and cools its own down', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('production', 'rt-c');
    const mark = up.mark();
    const { response, request_id } = await chat(gw, key, 'rt-cool', 'cool it');
    assert.equal(response.status, 200);
    assert.deepEqual(up.since(mark).map((r) => r.model), ['fail-429', 'gpt-4o-mini']);
    const rows = await rowsOf(gw, request_id, 2);
    assert.deepEqual(rows.map((r) => [r.attempt, r.deployment, r.status]), [
        [1, 'fail-429', 429],
        [2, 'gpt-4o-mini', 200],
    ]);
    // The upstream's retry-after-ms is 10: a breaker is not involved, and the cooldown is
    // short; it was set (the deployment's cooldown instant is no earlier than the request).
    const [cool] = await deployments(gw, 'rt-cool');
    assert.equal(cool.breaker, 'closed');
    assert.equal(cool.window_failures, 0);
});

test('fallback to another model once the deployments fail, priced as that model', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('production', 'rt-f');
    const mark = up.mark();
    const { data, response, request_id } = await chat(gw, key, 'rt-fallback', 'fall back please');
    assert.equal(response.status, 200);
    assert.deepEqual(up.since(mark).map((r) => r.model), ['gpt-4o-mini']);
    const rows = await rowsOf(gw, request_id, 2);
    assert.deepEqual(rows.map((r) => [r.attempt, r.provider, r.deployment, r.status]), [
        [1, 'dead', 'gone', 502],
        [2, 'up', 'gpt-4o-mini', 200],
    ]);
    assert.equal(rows[1].model_requested, 'rt-fallback');
    assert.equal(rows[1].cost_micros, expectedCost('rt-fb-target', usageOf(data)));
    assert.notEqual(rows[1].cost_micros, expectedCost('rt-fallback', usageOf(data)));
});

test('no retry once the first byte has reached the client', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('production', 'rt-s');
    const mark = up.mark();
    const stream = await gw.client(key, { maxRetries: 0 }).chat.completions.create({ model: 'rt-cut', messages: msg('cut me off now'), stream: true });
    let text = '';
    await assert.rejects(async () => {
        for await (const c of stream) text += c.choices?.[0]?.delta?.content ?? '';
    });
    assert.ok(text.length > 0, 'some content arrived before the cut');
    assert.deepEqual(up.since(mark).map((r) => r.model), ['cut-stream']);
});

test("a deployment's first_byte_ms times it out and the retry goes to the other deployment", T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('production', 'rt-t');
    const mark = up.mark();
    const started = Date.now();
    const { data, response, request_id } = await chat(gw, key, 'rt-timeout', 'too slow');
    assert.equal(response.status, 200);
    assert.equal(data.choices[0].message.content, 'echo: too slow');
    // The upstream holds slow-first-byte for 5 s; the provider's default first byte timeout
    // is 120 s, so only the deployment's 150 ms explains an answer well before 5 s.
    assert.ok(Date.now() - started < 4000, `took ${Date.now() - started} ms`);
    assert.deepEqual(up.since(mark).map((r) => r.model), ['slow-first-byte', 'gpt-4o-mini']);
    const rows = await rowsOf(gw, request_id, 2);
    assert.deepEqual(rows.map((r) => [r.attempt, r.deployment]), [
        [1, 'slow-first-byte'],
        [2, 'gpt-4o-mini'],
    ]);
    assert.notEqual(rows[0].error, '');
    assert.equal(rows[1].status, 200);
});

test('a deployment whose key variable is unset is said at start, skipped, and shown unavailable', T, async () => {
    const { up, gw } = ctx;
    const line = "provider 'az': environment variable TG_TEST_AZURE_KEY is not set; its deployments are unavailable";
    assert.equal(gw.logs().split(line).length - 1, 1, `one start line in:\n${gw.logs()}`);

    const key = await gw.createKey('production', 'rt-k');
    const mark = up.mark();
    // Weight 1000 against 1: only skipping az explains every call going to up.
    for (let i = 0; i < 10; i++) {
        const { data, response } = await chat(gw, key, 'rt-nokey', `no key ${i}`);
        assert.equal(response.status, 200);
        assert.equal(data.choices[0].message.content, `echo: no key ${i}`);
    }
    assert.deepEqual(up.since(mark).map((r) => r.model), Array(10).fill('gpt-4o-mini'));

    // Nothing else can serve: 503 naming the provider and the variable, nothing upstream.
    const mark2 = up.mark();
    const res = await gw.rawFetch('/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'rt-nokey-only', messages: msg('anyone?') }),
    });
    assert.equal(res.status, 503);
    assert.equal(res.json.error.type, 'server_error');
    assert.match(res.json.error.message, /provider 'az': environment variable TG_TEST_AZURE_KEY is not set/);
    assert.deepEqual(up.since(mark2), []);

    const ds = await deployments(gw, 'rt-nokey');
    const reason = "provider 'az': environment variable TG_TEST_AZURE_KEY is not set";
    assert.deepEqual(ds.map((d) => [d.provider, d.status, d.unavailable_reason]), [
        ['az', 'unavailable', reason],
        ['up', 'available', null],
    ]);
    const only = await deployments(gw, 'rt-nokey-only');
    assert.deepEqual(only.map((d) => [d.provider, d.status]), [['az', 'unavailable']]);
});

shutdownTest(ctx);
