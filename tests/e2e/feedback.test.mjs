// feedback.test.mjs: quality signals end to end (issue 6, part 4). POST /v1/feedback from
// applications (accepted for the project's own requests; 404 for unknown ids and other
// projects' ids; 400 for scores that are not numbers in [0, 1]), its aggregation by model and
// by deployment (GET /v1/organization/quality), and the automatic signals.
//
// The scripted upstream always finishes with "stop". To see finish_reason=length and empty
// answers, the gateway talks to it through a small rewriting proxy in this file: a request
// whose `user` is "quality:length" gets its answer's finish_reason set to "length" (in the JSON
// body, or in the finish chunk of a stream), "quality:empty" gets an empty content,
// "quality:refusal" a refusal instead of content.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startUpstream } from './lib/upstream.mjs';
import { startGateway, newUpstreamKey, newAzureKey, SLOW } from './lib/gateway.mjs';
import { T, msg } from './lib/setup.mjs';

const ctx = { upstreamKey: newUpstreamKey(), azureKey: newAzureKey() };

function rewrite(user, text, isStream) {
    const fix = (o) => {
        for (const c of o.choices || []) {
            if (user === 'quality:length' && c.finish_reason) c.finish_reason = 'length';
            if (user === 'quality:empty' && c.message) c.message.content = '';
            if (user === 'quality:empty' && c.delta && c.delta.content) c.delta.content = '';
            if (user === 'quality:refusal' && c.message) {
                c.message.content = null;
                c.message.refusal = 'I cannot help with that.';
            }
        }
        return o;
    };
    if (!isStream) return JSON.stringify(fix(JSON.parse(text)));
    return text
        .split('\n')
        .map((line) => (line.startsWith('data: {') ? 'data: ' + JSON.stringify(fix(JSON.parse(line.slice(6)))) : line))
        .join('\n');
}

// Forwards everything to the scripted upstream; rewrites the answers named above.
function startProxy(target) {
    const srv = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const body = Buffer.concat(chunks);
            let user = null;
            try {
                user = JSON.parse(body.toString('utf8')).user ?? null;
            } catch {
                user = null;
            }
            const headers = { ...req.headers, host: `127.0.0.1:${target.port}` };
            const up = http.request({ host: '127.0.0.1', port: target.port, method: req.method, path: req.url, headers }, (ur) => {
                const parts = [];
                ur.on('data', (c) => parts.push(c));
                ur.on('end', () => {
                    let out = Buffer.concat(parts);
                    const ct = String(ur.headers['content-type'] || '');
                    if (ur.statusCode === 200 && user && user.startsWith('quality:')) {
                        out = Buffer.from(rewrite(user, out.toString('utf8'), ct.includes('event-stream')));
                    }
                    const h = { ...ur.headers };
                    delete h['content-length'];
                    delete h['transfer-encoding'];
                    h['content-length'] = String(out.length);
                    res.writeHead(ur.statusCode, h);
                    res.end(out);
                });
            });
            up.on('error', () => {
                res.writeHead(502);
                res.end();
            });
            up.end(body);
        });
    });
    return new Promise((resolve) =>
        srv.listen(0, '127.0.0.1', () => {
            const port = srv.address().port;
            resolve({ srv, url: `http://127.0.0.1:${port}`, v1: `http://127.0.0.1:${port}/v1` });
        }),
    );
}

before(async () => {
    ctx.up = await startUpstream({ apiKey: ctx.upstreamKey, azureKey: ctx.azureKey });
    ctx.proxy = await startProxy({ port: new URL(ctx.up.url).port });
    ctx.gw = await startGateway({ upstream: ctx.proxy, upstreamKey: ctx.upstreamKey, azureKey: ctx.azureKey });
    ctx.devKey = await ctx.gw.createKey('development', 'feedback-e2e');
    ctx.stagingKey = await ctx.gw.createKey('staging', 'feedback-e2e');
});

after(async () => {
    if (ctx.gw && !ctx.gw.exit) {
        ctx.gw.kill();
        await ctx.gw.exited;
    }
    if (ctx.gw?.cleanupOk) ctx.gw.cleanup();
    await new Promise((r) => ctx.proxy.srv.close(r));
    await ctx.up.close();
});

// One chat completion through the SDK; returns its request id (x-request-id).
async function chat(key, model, opts = {}) {
    const { data, response } = await ctx.gw
        .client(key)
        .chat.completions.create({ model, messages: msg('say hi'), ...opts })
        .withResponse();
    const id = response.headers.get('x-request-id');
    assert.match(id, /^req_/);
    return { id, data };
}

function feedback(key, body) {
    return ctx.gw.rawFetch('/v1/feedback', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: typeof body === 'string' ? body : JSON.stringify(body),
    });
}

async function quality(groupBy) {
    const r = await ctx.gw.adminFetch(`/v1/organization/quality?group_by=${groupBy}`);
    assert.equal(r.status, 200, r.text);
    return r.json.data;
}

test('feedback on a request of the project is accepted and stored', T, async () => {
    const { id } = await chat(ctx.devKey, 'gpt-4o-mini');
    const r = await feedback(ctx.devKey, { request_id: id, score: 1, label: 'helpful', comment: 'spot on' });
    assert.equal(r.status, 201, r.text);
    assert.match(r.json.id, /^fb_/);
    assert.equal(r.json.object, 'feedback');
    assert.equal(r.json.request_id, id);
    assert.equal(r.json.score, 1);
    assert.equal(r.json.label, 'helpful');
    assert.equal(r.json.comment, 'spot on');
    assert.equal(r.json.model, 'gpt-4o-mini');
    assert.ok(Number.isInteger(r.json.created_at));

    // Once its ledger row is in the store the lookup goes there; the answer is the same.
    await ctx.gw.waitLedger(id);
    const again = await feedback(ctx.devKey, { request_id: id, score: 0.5, label: 'wrong' });
    assert.equal(again.status, 201, again.text);
    assert.equal(again.json.label, 'wrong');
    assert.equal(again.json.comment, null);
});

test('unknown request ids and other projects\' ids: 404 naming request_id', T, async () => {
    const unknown = await feedback(ctx.devKey, { request_id: 'req_00000000000000000000000000000000', score: 1 });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(unknown.json.error.param, 'request_id');
    assert.equal(unknown.json.error.type, 'invalid_request_error');

    const { id } = await chat(ctx.devKey, 'gpt-4o-mini');
    const other = await feedback(ctx.stagingKey, { request_id: id, score: 1 });
    assert.equal(other.status, 404, other.text);
    assert.equal(other.json.error.param, 'request_id');
    await ctx.gw.waitLedger(id);
    const stored = await feedback(ctx.stagingKey, { request_id: id, score: 1 });
    assert.equal(stored.status, 404, 'still unknown to another project once in the store');
});

test('absurd scores and bad bodies: 400 naming the field', T, async () => {
    const { id } = await chat(ctx.devKey, 'gpt-4o-mini');
    for (const score of [7, -1, 1.0001, 'high', true, false, null, [0.5], { v: 1 }]) {
        const r = await feedback(ctx.devKey, { request_id: id, score });
        assert.equal(r.status, 400, `score ${JSON.stringify(score)}: ${r.text}`);
        assert.equal(r.json.error.param, 'score', JSON.stringify(score));
    }
    const missing = await feedback(ctx.devKey, { request_id: id });
    assert.equal(missing.status, 400);
    assert.equal(missing.json.error.param, 'score');
    const noId = await feedback(ctx.devKey, { score: 0.5 });
    assert.equal(noId.json.error.param, 'request_id');
    const longLabel = await feedback(ctx.devKey, { request_id: id, score: 0.5, label: 'x'.repeat(65) });
    assert.equal(longLabel.status, 400);
    assert.equal(longLabel.json.error.param, 'label');
    const longComment = await feedback(ctx.devKey, { request_id: id, score: 0.5, comment: 'x'.repeat(2001) });
    assert.equal(longComment.json.error.param, 'comment');
    const extra = await feedback(ctx.devKey, { request_id: id, score: 0.5, stars: 5 });
    assert.equal(extra.status, 400);
    assert.equal(extra.json.error.param, 'stars');
    const notJson = await feedback(ctx.devKey, '{"request_id": ');
    assert.equal(notJson.status, 400);
    // The boundaries are scores.
    assert.equal((await feedback(ctx.devKey, { request_id: id, score: 0 })).status, 201);
});

test('aggregation by model and by deployment', T, async () => {
    // azure-4o is served by the deployment "my-deployment" (staging may use every model).
    const a = await chat(ctx.stagingKey, 'azure-4o');
    const b = await chat(ctx.stagingKey, 'azure-4o');
    assert.equal((await feedback(ctx.stagingKey, { request_id: a.id, score: 0.25, label: 'slow' })).status, 201);
    assert.equal((await feedback(ctx.stagingKey, { request_id: b.id, score: 0.75, label: 'slow' })).status, 201);

    const byModel = await quality('model');
    const az = byModel.find((q) => q.model === 'azure-4o');
    assert.ok(az, JSON.stringify(byModel));
    assert.equal(az.object, 'quality');
    assert.equal(az.deployment, null);
    assert.equal(az.feedback_count, 2);
    assert.equal(az.feedback_mean, 0.5);
    assert.deepEqual(az.labels, { slow: 2 });
    assert.equal(az.requests, 2);
    assert.equal(az.error_rate, 0);

    // gpt-4o-mini: the first test's 1 (helpful) and 0.5 (wrong), the third's 0.
    const mini = byModel.find((q) => q.model === 'gpt-4o-mini');
    assert.equal(mini.feedback_count, 3);
    assert.equal(mini.feedback_mean, 0.5);
    assert.deepEqual(mini.labels, { helpful: 1, wrong: 1 });

    const byDep = await quality('deployment');
    const dep = byDep.find((q) => q.model === 'azure-4o');
    assert.equal(dep.deployment, 'my-deployment');
    assert.equal(dep.feedback_count, 2);

    // Health counts the feedback in the deployment's window too.
    const health = await ctx.gw.adminFetch('/v1/organization/health');
    const h = health.json.data.find((d) => d.model === 'azure-4o');
    assert.equal(h.deployment, 'my-deployment');
    assert.equal(h.provider, 'az');
    assert.equal(h.quality.feedback_count, 2);
    assert.equal(h.quality.feedback_mean, 0.5);

    const bad = await ctx.gw.adminFetch('/v1/organization/quality?group_by=colour');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'group_by');
});

test('automatic signals: finish_reason=length, empty answers and refusals, buffered and streamed', T, async () => {
    const client = ctx.gw.client(ctx.stagingKey);
    // mock-small is served in-process; use a model of the scripted upstream of its own.
    const model = 'gpt-4o-mini';
    const before = (await quality('model')).find((q) => q.model === model) || { requests: 0 };
    const n0 = before.requests;

    const long = await chat(ctx.stagingKey, model, { user: 'quality:length' });
    assert.equal(long.data.choices[0].finish_reason, 'length', 'the proxy rewrote it');
    const empty = await chat(ctx.stagingKey, model, { user: 'quality:empty' });
    assert.equal(empty.data.choices[0].message.content, '');
    const stream = await client.chat.completions.create({ model, messages: msg('say hi'), stream: true, user: 'quality:length' });
    let finish = null;
    for await (const chunk of stream) finish = chunk.choices[0]?.finish_reason || finish;
    assert.equal(finish, 'length');
    await chat(ctx.stagingKey, model);
    let q = (await quality('model')).find((x) => x.model === model);
    assert.equal(q.requests - n0, 4);
    // Rates over every gpt-4o-mini answer so far: n0 plain ones (stop, non-empty) and these 4.
    assert.equal(q.finish_length_rate, 2 / q.requests);
    assert.equal(q.empty_rate, 1 / q.requests);
    assert.equal(q.refusal_rate, 0);

    const refused = await chat(ctx.stagingKey, model, { user: 'quality:refusal' });
    assert.equal(refused.data.choices[0].message.refusal, 'I cannot help with that.');
    q = (await quality('model')).find((x) => x.model === model);
    assert.equal(q.refusal_rate, 1 / q.requests);
    assert.equal(q.empty_rate, 1 / q.requests, 'a refusal is not an empty answer');
});

test('shutdown: SIGTERM exits 0, no sanitizer report, no secret in the logs', { timeout: 60000 * SLOW }, async () => {
    await ctx.gw.stopAndCheck();
});
