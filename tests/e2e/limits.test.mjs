// limits.test.mjs: rate limits and hard budgets on the inference path (issue 4, tests a, b,
// c, e, f): 500 concurrent requests against a budget (never overspent, settled spend equal to
// the upstream's usage priced, no refused request upstream); a refusal at one of three levels
// leaving the other two untouched; RPM and TPM accuracy and the TPM refund; the month
// rollover with the test clock; OpenAI's headers and 429 bodies, and the SDK's retry
// honouring retry-after-ms. Also: injected and clamped output caps and n, usage the upstream
// omits billed at the bound and flagged, a budgeted model without a price refused.
//
// The gateway runs with TOLLGATE_TEST_CLOCK=1; every test makes its own project, so one
// test's limits never reach another's requests (the organization's budget is the default
// $100 until the three-level test raises and restores it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { expectedCost, startGateway, SLOW } from './lib/gateway.mjs';

const ctx = useGateway({ gateway: { env: { TOLLGATE_TEST_CLOCK: '1' } } });

const MODEL = 'gpt-4o-mini';
const DURATION_RE = /^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$/;

let seq = 0;
function uniqueName(base) {
    seq += 1;
    return `${base}-${process.pid}-${seq}`;
}

async function ok(r) {
    const res = await r;
    assert.equal(res.status, 200, res.text);
    return res.json;
}

async function newProject(gw) {
    return ok(gw.adminFetch('/v1/organization/projects', { body: { name: uniqueName('lim') } }));
}

function setBudget(gw, path, body) {
    return ok(gw.adminFetch(`/v1/organization/${path}budget`, { body }));
}

async function spendOf(gw, path) {
    return (await ok(gw.adminFetch(`/v1/organization/${path}budget`))).spend_micros;
}

function setRate(gw, path, id, body) {
    return ok(gw.adminFetch(`/v1/organization/${path}rate_limits/${id}`, { body }));
}

function chat(gw, key, body, headers = {}) {
    return gw.rawFetch('/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
        body: JSON.stringify(body),
    });
}

// The ledger rows of a project once `count` of them are written (bounded poll).
async function projectRows(gw, projectId, count) {
    const end = Date.now() + 15000 * SLOW;
    for (;;) {
        const rows = (await gw.readLedger()).filter((r) => r.project_id === projectId);
        if (rows.length >= count) return rows;
        if (Date.now() > end) throw new Error(`ledger: ${rows.length} of ${count} rows for ${projectId}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

function assertErrorShape(json, type, code) {
    assert.ok(json && json.error, 'an error object');
    assert.deepEqual(Object.keys(json.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(json.error.type, type);
    assert.equal(json.error.code, code);
}

async function setClock(gw, nowMs) {
    return ok(gw.adminFetch('/v1/organization/_test/clock', { body: { now_ms: nowMs } }));
}

test('(a) 500 concurrent requests, half streaming, against a budget: never over, settled = upstream usage priced, refused never upstream', { timeout: 60000 * SLOW }, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const key = await gw.createKey(p.id, 'a');
    // One request's bound: the body's bytes (about 90) at the input price plus max_tokens at
    // the output price: about 135 + 480 micro-dollars; $0.03 holds about 50 bounds at once.
    const budget = 30000;
    await setBudget(gw, `projects/${p.id}/`, { monthly_limit_micros: budget });
    up.opts.randomUsage = true;
    const mark = up.mark();
    let results;
    try {
        results = await Promise.all(
            Array.from({ length: 500 }, (_, i) => {
                const stream = i % 2 === 1;
                return chat(gw, key, { model: MODEL, messages: msg(`request ${i}`), max_tokens: 80, ...(stream ? { stream: true } : {}) });
            }),
        );
    } finally {
        up.opts.randomUsage = false;
    }
    // Admitted: 200; refused: 429. Some admitted calls may end 504 when this one Node process
    // (client and upstream) is too busy to answer within the gateway's 1 s first-byte timeout
    // (on a loaded machine): those are released (no work billed), as a provider timeout is,
    // and every invariant below still holds.
    const indexOf = (c) => Number(/request (\d+)/.exec(c.body.messages[0].content)[1]);
    const admitted = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    const timedOut = results.filter((r) => r.status === 504);
    assert.equal(admitted.length + refused.length + timedOut.length, 500, 'only 200, 429 and 504');
    for (const r of refused) {
        assertErrorShape(r.json, 'insufficient_quota', 'insufficient_quota');
        assert.match(r.json.error.message, new RegExp(`project ${p.id} \\(\\$0\\.03\\)`));
        assert.equal(r.headers.get('x-should-retry'), 'false');
    }
    assert.ok(admitted.length >= 20, `admitted ${admitted.length} (${timedOut.length} timed out)`);
    assert.ok(refused.length >= 100, `refused ${refused.length}`);
    assert.ok(admitted.some((r) => r.headers.get('content-type').startsWith('text/event-stream')));
    assert.ok(admitted.some((r) => r.headers.get('content-type').startsWith('application/json')));

    // No refused request reached the upstream: every upstream call is an admitted request.
    const calls = up.since(mark);
    assert.equal(calls.length, admitted.length + timedOut.length, 'upstream calls = admitted requests');
    for (const c of calls) {
        assert.notEqual(results[indexOf(c)].status, 429, `refused request ${indexOf(c)} reached the upstream`);
        assert.equal(c.body.max_tokens, 80, 'the client cap, under the budget cap');
    }

    const rows = await projectRows(gw, p.id, calls.length);
    assert.equal(rows.length, calls.length);
    const settled = rows.reduce((s, r) => s + r.cost_micros, 0);
    const priced = calls.filter((c) => results[indexOf(c)].status === 200).reduce((s, c) => s + expectedCost(MODEL, c.usage), 0);
    assert.equal(settled, priced, 'settled spend = upstream-reported usage priced, to the micro-dollar');
    assert.ok(settled <= budget, `settled ${settled} <= budget ${budget}`);
    for (const r of rows) assert.equal(Number(r.is_usage_estimated), 0);
    assert.equal(await spendOf(gw, `projects/${p.id}/`), settled, 'admission spend = ledger');
});

test('(b) three levels at once: a refusal at one level leaves the other two untouched', T, async () => {
    const { gw } = ctx;
    const org0 = await ok(gw.adminFetch('/v1/organization/budget'));
    const p = await newProject(gw);
    const k1 = await gw.createKeyObject(p.id, 'b1');
    const k2 = await gw.createKeyObject(p.id, 'b2');
    const keyPath = (k) => `projects/${p.id}/api_keys/${k.id}/`;
    await setBudget(gw, `projects/${p.id}/`, { monthly_limit_micros: 5000 });
    await setRate(gw, `projects/${p.id}/`, 'rl-all-models', { max_requests_per_1_minute: 5 });
    await setBudget(gw, keyPath(k1), { monthly_limit_micros: 1 });
    await setBudget(gw, keyPath(k2), { monthly_limit_micros: 1000000 });
    const body = { model: MODEL, messages: msg('three levels'), max_tokens: 20 };

    const first = await chat(gw, k2.value, body);
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get('x-ratelimit-limit-requests'), '5');
    assert.equal(first.headers.get('x-ratelimit-remaining-requests'), '4');
    const before = {
        org: await spendOf(gw, ''),
        project: await spendOf(gw, `projects/${p.id}/`),
        k1: await spendOf(gw, keyPath(k1)),
        k2: await spendOf(gw, keyPath(k2)),
    };
    assert.ok(before.project > 0 && before.k2 === before.project && before.k1 === 0);

    // Key level refuses: the project's and org's budgets and the project's RPM untouched.
    for (let i = 0; i < 3; i++) {
        const r = await chat(gw, k1.value, body);
        assert.equal(r.status, 429, r.text);
        assertErrorShape(r.json, 'insufficient_quota', 'insufficient_quota');
        assert.match(r.json.error.message, new RegExp(`API key ${k1.id} \\(\\$0\\.000001\\)`));
    }
    assert.equal(await spendOf(gw, ''), before.org);
    assert.equal(await spendOf(gw, `projects/${p.id}/`), before.project);
    assert.equal(await spendOf(gw, keyPath(k1)), 0);
    const second = await chat(gw, k2.value, body);
    assert.equal(second.status, 200);
    assert.equal(second.headers.get('x-ratelimit-remaining-requests'), '3', 'key refusals took no project request');

    // Project level refuses (its RPM): no key or org spend moves, k2's budget untouched.
    const mid = { org: await spendOf(gw, ''), k2: await spendOf(gw, keyPath(k2)) };
    let limited = null;
    for (let i = 0; i < 5 && !limited; i++) {
        const r = await chat(gw, k2.value, body);
        if (r.status === 429) limited = r;
        else assert.equal(r.status, 200, r.text);
    }
    assert.ok(limited, 'the project RPM refused');
    assertErrorShape(limited.json, 'requests', 'rate_limit_exceeded');
    assert.match(limited.json.error.message, new RegExp(`in project ${p.id} on requests per min \\(RPM\\): Limit 5`));
    const spentAfter = await spendOf(gw, keyPath(k2));
    const orgAfter = await spendOf(gw, '');
    assert.equal(orgAfter - mid.org, spentAfter - mid.k2, 'only admitted requests were charged');

    // Organization level refuses: set its budget to what is spent; project and keys untouched.
    const p2 = await newProject(gw);
    const k3 = await gw.createKeyObject(p2.id, 'b3');
    await setBudget(gw, '', { monthly_limit_micros: orgAfter + 1 });
    try {
        const r = await chat(gw, k3.value, body);
        assert.equal(r.status, 429, r.text);
        assertErrorShape(r.json, 'insufficient_quota', 'insufficient_quota');
        assert.match(r.json.error.message, /organization org-/);
        assert.equal(await spendOf(gw, `projects/${p2.id}/`), 0);
        assert.equal(await spendOf(gw, `projects/${p2.id}/api_keys/${k3.id}/`), 0);
        assert.equal(await spendOf(gw, ''), orgAfter);
    } finally {
        await setBudget(gw, '', { monthly_limit_micros: org0.monthly_limit_micros });
    }
});

test('(c) RPM accuracy: Limit N admits N in a burst, then 429 requests with the wait of one request', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const key = await gw.createKey(p.id, 'c-rpm');
    await setRate(gw, `projects/${p.id}/`, `rl-${MODEL}`, { max_requests_per_1_minute: 3 });
    const mark = up.mark();
    const statuses = [];
    const remaining = [];
    let refusal = null;
    for (let i = 0; i < 5; i++) {
        const r = await chat(gw, key, { model: MODEL, messages: msg('rpm'), max_tokens: 5 });
        statuses.push(r.status);
        if (r.status === 200) remaining.push(r.headers.get('x-ratelimit-remaining-requests'));
        else refusal = refusal || r;
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    assert.deepEqual(remaining, ['2', '1', '0']);
    assert.equal(up.since(mark).length, 3);
    assertErrorShape(refusal.json, 'requests', 'rate_limit_exceeded');
    assert.match(refusal.json.error.message, new RegExp(`^Rate limit reached for ${MODEL} in project ${p.id} on requests per min \\(RPM\\): Limit 3, Used 3, Requested 1\\. Please try again in `));
    const ms = Number(refusal.headers.get('retry-after-ms'));
    assert.ok(ms > 0 && ms <= 20000, `retry-after-ms ${ms}: at most one request's share of the minute`);
    assert.equal(Number(refusal.headers.get('retry-after')), Math.ceil(ms / 1000));
    // Another model is not under the model's limit.
    const other = await chat(gw, key, { model: 'mock-small', messages: msg('rpm'), max_tokens: 5 });
    assert.equal(other.status, 200, other.text);
});

test('(c) TPM accuracy over held requests, and the refund of unused tokens when they settle', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const key = await gw.createKey(p.id, 'c-tpm');
    await setRate(gw, `projects/${p.id}/`, 'rl-all-models', { max_tokens_per_1_minute: 1000 });
    // 40 characters: 10 tokens estimated, plus max_tokens 300: 310 tokens at admission.
    const text = 'a'.repeat(40);
    const body = { model: 'slow-stream', messages: msg(text), max_tokens: 300, stream: true };
    const mark = up.mark();
    const held = [];
    for (let i = 0; i < 3; i++) {
        const r = fetch(`${gw.v1}/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify(body),
        });
        held.push(r);
        await up.waitForRequests(mark + i + 1);
    }
    const heads = await Promise.all(held);
    assert.deepEqual(heads.map((r) => r.status), [200, 200, 200]);
    const rem = heads.map((r) => Number(r.headers.get('x-ratelimit-remaining-tokens')));
    // 690, 380, 70 and a little refill (1000 per minute: under 17 per second).
    [690, 380, 70].forEach((want, i) => assert.ok(rem[i] >= want && rem[i] < want + 40, `remaining ${rem[i]} vs ${want}`));
    assert.equal(heads[0].headers.get('x-ratelimit-limit-tokens'), '1000');
    assert.match(heads[0].headers.get('x-ratelimit-reset-tokens'), DURATION_RE);

    const refused = await chat(gw, key, { ...body, stream: false });
    assert.equal(refused.status, 429, refused.text);
    assertErrorShape(refused.json, 'tokens', 'rate_limit_exceeded');
    assert.match(refused.json.error.message, /on tokens per min \(TPM\): Limit 1000, Used \d+, Requested 310\./);
    const wait = Number(refused.headers.get('retry-after-ms'));
    // 930 reserved + 310 = 240 over: 14.4 s at 1000 per minute (less the refill since).
    assert.ok(wait > 12000 && wait <= 14400, `retry-after-ms ${wait}`);
    assert.equal(up.since(mark).length, 3, 'the refused request did not reach the upstream');

    // Release: each settles with its real usage (11 prompt + 4 completion), refunding 295.
    up.release();
    const texts = await Promise.all(heads.map((r) => r.text()));
    for (const t of texts) assert.match(t, /data: \[DONE\]/);
    const after = await chat(gw, key, { model: MODEL, messages: msg(text), max_tokens: 300 });
    assert.equal(after.status, 200, after.text);
    const left = Number(after.headers.get('x-ratelimit-remaining-tokens'));
    // Without the refund: 70 - 310 < 0 (refused); with it: 1000 - 3 x 15 - 310 = 645.
    assert.ok(left >= 645 && left < 700, `remaining after refund ${left}`);
    // A request larger than the whole limit: refused for good, the SDK told not to retry.
    // (The organization's default budget clamps the cap to 4096: 1 + 4096 tokens.)
    const huge = await chat(gw, key, { model: MODEL, messages: msg('x'), max_tokens: 5000 });
    assert.equal(huge.status, 429);
    assertErrorShape(huge.json, 'tokens', 'rate_limit_exceeded');
    assert.match(huge.json.error.message, /^Request too large for gpt-4o-mini in project proj_\S+ on tokens per min \(TPM\): Limit 1000, Requested 4097\./);
    assert.equal(huge.headers.get('x-should-retry'), 'false');
});

test('budgeted requests: max_tokens injected, caps clamped, n clamped; a model without a price refused', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const key = await gw.createKey(p.id, 'inject');
    await setBudget(gw, `projects/${p.id}/`, { monthly_limit_micros: 1000000, max_tokens_cap: 64, max_n: 2 });
    const mark = up.mark();
    assert.equal((await chat(gw, key, { model: MODEL, messages: msg('no cap') })).status, 200);
    assert.equal((await chat(gw, key, { model: MODEL, messages: msg('big cap'), max_completion_tokens: 5000, n: 5 })).status, 200);
    assert.equal((await chat(gw, key, { model: MODEL, messages: msg('small cap'), max_tokens: 10 })).status, 200);
    const r = await gw.rawFetch('/v1/responses', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, input: 'responses cap' }),
    });
    assert.equal(r.status, 200, r.text);
    const cmpl = await gw.rawFetch('/v1/completions', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: MODEL, prompt: 'best of', best_of: 5, max_tokens: 1000 }),
    });
    assert.equal(cmpl.status, 200, cmpl.text);
    const [a, b, c, d, e] = up.since(mark).map((x) => x.body);
    assert.equal(e.best_of, 2, 'best_of clamped (all best_of choices are billed)');
    assert.equal(e.max_tokens, 64);
    assert.equal(a.max_tokens, 64, 'injected');
    assert.equal(b.max_completion_tokens, 64, 'clamped, in the member the client used');
    assert.equal(b.max_tokens, undefined);
    assert.equal(b.n, 2, 'n clamped');
    assert.equal(c.max_tokens, 10, 'a cap under the budget cap is kept');
    assert.equal(d.max_output_tokens, 64, 'Responses: max_output_tokens');
    // The `*` route reaches a model with no price: refused before the upstream.
    const m2 = up.mark();
    const nop = await chat(gw, key, { model: 'no-price-model', messages: msg('x') });
    assert.equal(nop.status, 403, nop.text);
    assert.equal(nop.json.error.code, 'model_price_missing');
    assert.match(nop.json.error.message, /no price/);
    assert.equal(up.since(m2).length, 0);
});

test('usage the upstream omits: billed at the bound, flagged, and the same cost in the budget', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const key = await gw.createKey(p.id, 'nousage');
    await setBudget(gw, `projects/${p.id}/`, { monthly_limit_micros: 1000000 });
    const body = { model: MODEL, messages: msg('no usage please'), max_tokens: 50, user: 'behaviour:no-usage' };
    const mark = up.mark();
    const r = await chat(gw, key, body);
    assert.equal(r.status, 200, r.text);
    assert.equal(up.since(mark)[0].usage, null);
    const [row] = await gw.waitLedger(r.headers.get('x-request-id'));
    const bytes = Buffer.byteLength(JSON.stringify(body));
    assert.equal(Number(row.is_usage_estimated), 1);
    assert.equal(row.prompt_tokens, bytes, 'the prompt bound: the body bytes');
    assert.equal(row.completion_tokens, 50);
    const cost = expectedCost(MODEL, { prompt_tokens: bytes, cached_tokens: 0, completion_tokens: 50 });
    assert.equal(row.cost_micros, cost);
    assert.equal(await spendOf(gw, `projects/${p.id}/`), cost);
});

test('lower_max_tokens: the cap is lowered to what the budget allows, and refused below one token', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const key = await gw.createKey(p.id, 'lower');
    const body = { model: MODEL, messages: msg('lower'), max_tokens: 1000 };
    const bytes = Buffer.byteLength(JSON.stringify(body));
    // Room for the prompt bound and 100 output tokens (6 micro-dollars each).
    const prompt = expectedCost(MODEL, { prompt_tokens: bytes, cached_tokens: 0, completion_tokens: 0 });
    await setBudget(gw, `projects/${p.id}/`, { monthly_limit_micros: prompt + 600, on_exceed: 'lower_max_tokens' });
    const mark = up.mark();
    const r = await chat(gw, key, body);
    assert.equal(r.status, 200, r.text);
    assert.equal(up.since(mark)[0].body.max_tokens, 100);
    // Spend now leaves less than the prompt: refused.
    await setBudget(gw, `projects/${p.id}/`, { monthly_limit_micros: (await spendOf(gw, `projects/${p.id}/`)) + prompt - 1 });
    const r2 = await chat(gw, key, body);
    assert.equal(r2.status, 429, r2.text);
    assert.equal(r2.json.error.code, 'insufficient_quota');
    assert.equal(up.since(mark).length, 1);
});

test('a restart keeps the month\'s spend: admission is seeded from the ledger at start-up', { timeout: 60000 * SLOW }, async () => {
    const { up, upstreamKey, azureKey } = ctx;
    const gws = [await startGateway({ upstream: up, upstreamKey, azureKey })];
    try {
        const first = gws[0];
        const p = await newProject(first);
        const k = await first.createKeyObject(p.id, 'restart');
        const path = `projects/${p.id}/`;
        const keyPath = `${path}api_keys/${k.id}/`;
        await setBudget(first, path, { monthly_limit_micros: 1000000 });
        await setBudget(first, keyPath, { monthly_limit_micros: 1000000 });
        for (let i = 0; i < 3; i++) {
            const r = await chat(first, k.value, { model: MODEL, messages: msg(`restart ${i}`), max_tokens: 20 });
            assert.equal(r.status, 200, r.text);
        }
        const spent = { project: await spendOf(first, path), key: await spendOf(first, keyPath), org: await spendOf(first, '') };
        assert.ok(spent.project > 0);
        await first.stopAndCheck();
        const ledger = (await first.readLedger()).filter((r) => r.project_id === p.id);
        assert.equal(ledger.reduce((s, r) => s + r.cost_micros, 0), spent.project);

        gws.push(await startGateway({ upstream: up, upstreamKey, azureKey, dataDir: first.dataDir, adminKey: first.adminKey }));
        const second = gws[1];
        second.clientKeys.push(k.value);
        assert.equal(await spendOf(second, path), spent.project, 'project spend seeded');
        assert.equal(await spendOf(second, keyPath), spent.key, 'key spend seeded');
        assert.equal(await spendOf(second, ''), spent.org, 'organization spend seeded');
        // The seeded spend counts at admission: a budget just above it refuses the next bound.
        await setBudget(second, path, { monthly_limit_micros: spent.project + 1 });
        const r = await chat(second, k.value, { model: MODEL, messages: msg('after restart'), max_tokens: 20 });
        assert.equal(r.status, 429, r.text);
        assert.equal(r.json.error.code, 'insufficient_quota');
        await second.stopAndCheck();
    } finally {
        for (const g of gws) {
            if (!g.exit) {
                g.kill();
                await g.exited;
            }
        }
        for (const g of gws) if (g.cleanupOk) g.cleanup();
    }
});

test('(f) headers and 429 bodies as the SDK expects; the SDK retry honours retry-after-ms', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const key = await gw.createKey(p.id, 'sdk');
    await setRate(gw, `projects/${p.id}/`, 'rl-all-models', { max_tokens_per_1_minute: 600, max_requests_per_1_minute: 100 });
    // Admitted answers carry OpenAI's x-ratelimit-* headers, JSON and SSE alike.
    const attempts = [];
    const countingFetch = async (url, init) => {
        const res = await fetch(url, init);
        attempts.push({ at: Date.now(), status: res.status, retryMs: res.headers.get('retry-after-ms') });
        return res;
    };
    const client = new OpenAI({ apiKey: key, baseURL: gw.v1, fetch: countingFetch, maxRetries: 2, timeout: 30000 * SLOW });
    const { data, response } = await client.chat.completions.create({ model: MODEL, messages: msg('hi'), max_tokens: 5 }).withResponse();
    assert.equal(data.object, 'chat.completion');
    for (const u of ['requests', 'tokens']) {
        assert.match(response.headers.get(`x-ratelimit-limit-${u}`), /^\d+$/);
        assert.match(response.headers.get(`x-ratelimit-remaining-${u}`), /^\d+$/);
        assert.match(response.headers.get(`x-ratelimit-reset-${u}`), DURATION_RE);
    }
    assert.equal(response.headers.get('x-ratelimit-limit-tokens'), '600');
    const s = await chat(gw, key, { model: MODEL, messages: msg('hi'), max_tokens: 5, stream: true });
    assert.equal(s.status, 200);
    assert.ok(s.headers.get('content-type').startsWith('text/event-stream'));
    assert.equal(s.headers.get('x-ratelimit-limit-requests'), '100');

    // A fresh project: hold 310 tokens in a slow stream; a 310-token request then waits for
    // 20 tokens to drain (2 s at 600 per minute): the SDK gets the 429, waits retry-after-ms,
    // and is admitted.
    const p2 = await newProject(gw);
    const key2 = await gw.createKey(p2.id, 'sdk-retry');
    await setRate(gw, `projects/${p2.id}/`, 'rl-all-models', { max_tokens_per_1_minute: 600 });
    const client2 = new OpenAI({ apiKey: key2, baseURL: gw.v1, fetch: countingFetch, maxRetries: 2, timeout: 30000 * SLOW });
    const text = 'a'.repeat(40);
    const mark = up.mark();
    const holding = fetch(`${gw.v1}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key2}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'slow-stream', messages: msg(text), max_tokens: 300, stream: true }),
    });
    await up.waitForRequests(mark + 1);
    attempts.length = 0;
    const answer = await client2.chat.completions.create({ model: MODEL, messages: msg(text), max_tokens: 300 });
    assert.equal(answer.object, 'chat.completion');
    assert.deepEqual(attempts.map((a) => a.status), [429, 200], 'one 429, then admitted on the retry');
    const waitMs = Number(attempts[0].retryMs);
    assert.ok(waitMs > 0 && waitMs <= 2600, `retry-after-ms ${waitMs}`);
    assert.ok(attempts[1].at - attempts[0].at >= waitMs - 5, `the SDK waited ${attempts[1].at - attempts[0].at} ms for ${waitMs}`);
    assert.equal(up.since(mark).length, 2, 'the held stream and the one admitted attempt');
    up.release();
    await (await holding).text();

    // Budget refusals: RateLimitError with insufficient_quota, and no SDK retry.
    await setBudget(gw, `projects/${p.id}/`, { monthly_limit_micros: 1 });
    attempts.length = 0;
    const m2 = up.mark();
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: msg('hi'), max_tokens: 5 }), (e) => {
        assert.ok(e instanceof OpenAI.RateLimitError);
        assert.equal(e.status, 429);
        assert.equal(e.code, 'insufficient_quota');
        assert.equal(e.type, 'insufficient_quota');
        assert.ok(e.requestID, 'x-request-id on the error');
        return true;
    });
    assert.equal(attempts.length, 1, 'x-should-retry: false stops the SDK');
    assert.equal(up.since(m2).length, 0);
});

test('(e) month rollover with the test clock: a spent budget is whole again in the next month; a request is billed to the month it was admitted in', T, async () => {
    const { gw, up } = ctx;
    const jan = Date.UTC(2031, 0, 31, 23, 58, 0);
    const feb = Date.UTC(2031, 1, 1, 0, 0, 30);
    await setClock(gw, jan);
    try {
        const p = await newProject(gw);
        const key = await gw.createKey(p.id, 'month');
        const path = `projects/${p.id}/`;
        await setBudget(gw, path, { monthly_limit_micros: 2000 });
        const body = { model: MODEL, messages: msg('month'), max_tokens: 100 };
        let refused = null;
        for (let i = 0; i < 60 && !refused; i++) {
            const r = await chat(gw, key, body);
            if (r.status === 429) refused = r;
            else assert.equal(r.status, 200, r.text);
        }
        assert.ok(refused, 'the budget ran out in January');
        assert.equal(refused.json.error.code, 'insufficient_quota');
        const janSpend = await spendOf(gw, path);
        assert.ok(janSpend > 0 && janSpend <= 2000);
        // Admitted in January, still running at the turn of the month.
        const holdBody = { model: 'slow-stream', messages: msg('held'), max_tokens: 10, stream: true };
        await setBudget(gw, path, { monthly_limit_micros: janSpend + 400 });
        const mark = up.mark();
        const held = fetch(`${gw.v1}/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify(holdBody),
        });
        await up.waitForRequests(mark + 1);
        await setBudget(gw, path, { monthly_limit_micros: 2000 });

        await setClock(gw, feb);
        const b = await ok(gw.adminFetch(`/v1/organization/${path}budget`));
        assert.equal(b.period_start, Date.UTC(2031, 1, 1) / 1000);
        assert.equal(b.spend_micros, 0, 'February starts at zero');
        up.release();
        await (await held).text();
        assert.equal(await spendOf(gw, path), 0, 'the held request settled into January');
        const r = await chat(gw, key, body);
        assert.equal(r.status, 200, r.text);
        const [row] = await gw.waitLedger(r.headers.get('x-request-id'));
        assert.ok(row.time_ms >= feb, 'the ledger row is in February');
        assert.equal(await spendOf(gw, path), row.cost_micros);
    } finally {
        await setClock(gw, null);
    }
    // Without TOLLGATE_TEST_CLOCK the route does not exist: see the gateway's env above; a
    // reader (non-owner) key is refused here.
});

shutdownTest(ctx);
