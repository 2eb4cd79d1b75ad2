// ledger.test.mjs: every request lands in the ledger exactly as the upstream reported it
// (prompt, cached, completion, reasoning tokens), with cost_micros from the configured prices,
// for each endpoint, stream and non-stream; a client that leaves mid-stream is still
// accounted (499, full usage); a graceful stop loses no row; the usage admin endpoint agrees.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { expectedCost, startGateway, SLOW } from './lib/gateway.mjs';

const ctx = useGateway();

function tokensOf(row) {
    return {
        prompt_tokens: row.prompt_tokens,
        cached_tokens: row.cached_tokens,
        completion_tokens: row.completion_tokens,
        reasoning_tokens: row.reasoning_tokens,
    };
}

// The single ledger row of a request, checked against what it must say.
async function checkRow(gw, requestId, want) {
    const rows = await gw.waitLedger(requestId);
    assert.equal(rows.length, 1, `one row for ${requestId}: ${JSON.stringify(rows)}`);
    const row = rows[0];
    assert.equal(row.endpoint, want.endpoint);
    assert.equal(row.model_requested, want.model);
    assert.equal(row.provider, want.provider ?? 'up');
    assert.equal(row.deployment, want.deployment ?? want.model);
    assert.equal(row.status, want.status ?? 200);
    assert.equal(Number(row.is_stream), want.stream ? 1 : 0);
    if (want.usage) {
        assert.deepEqual(tokensOf(row), want.usage, 'tokens as the upstream reported them');
        assert.equal(Number(row.is_usage_estimated), 0);
    }
    if (want.cost !== undefined) assert.equal(row.cost_micros, want.cost, 'cost_micros');
    if (want.key) {
        assert.equal(row.key_id, want.key.id);
        assert.equal(row.project_id, want.key.project_id);
    }
    assert.ok(row.latency_ms >= 0);
    assert.ok(typeof row.time_ms === 'number' && row.time_ms > 1.7e12, 'time_ms is Unix milliseconds');
    return row;
}

async function drain(stream) {
    let text = '';
    for await (const c of stream) {
        if (c.choices?.length) text += c.choices[0].delta?.content ?? c.choices[0].text ?? '';
        if (c.type === 'response.output_text.delta') text += c.delta;
    }
    return text;
}

test('chat non-stream row: tokens, cost, key, project', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('development', 'l-chat');
    const mark = up.mark();
    const { request_id } = await gw.client(key.value).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('count my tokens please') }).withResponse();
    const [rec] = up.since(mark);
    const row = await checkRow(gw, request_id, {
        endpoint: 'chat.completions',
        model: 'gpt-4o-mini',
        usage: rec.usage,
        cost: expectedCost('gpt-4o-mini', rec.usage),
        key,
    });
    assert.ok(!row.error, `no error: ${row.error}`);
    assert.equal(row.cost_micros, 61, 'prompt 14 (3 cached), completion 7 at 1.5/0.75/6 USD per 1M: 60.75 rounded up');
});

test('chat n=2 row counts every choice', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('development', 'l-n2');
    const mark = up.mark();
    const { request_id } = await gw.client(key.value).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('two of them'), n: 2 }).withResponse();
    const [rec] = up.since(mark);
    assert.equal(rec.usage.completion_tokens, 2 * 6);
    await checkRow(gw, request_id, { endpoint: 'chat.completions', model: 'gpt-4o-mini', usage: rec.usage, cost: expectedCost('gpt-4o-mini', rec.usage) });
});

test('chat stream rows, with and without include_usage', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('development', 'l-stream');
    const c = gw.client(key.value);
    for (const opts of [{}, { stream_options: { include_usage: true } }]) {
        const mark = up.mark();
        const { data, request_id } = await c.chat.completions
            .create({ model: 'gpt-4o-mini', messages: msg('stream and count'), stream: true, ...opts })
            .withResponse();
        assert.equal(await drain(data), 'echo: stream and count');
        const [rec] = up.since(mark);
        await checkRow(gw, request_id, {
            endpoint: 'chat.completions',
            model: 'gpt-4o-mini',
            stream: true,
            usage: rec.usage,
            cost: expectedCost('gpt-4o-mini', rec.usage),
            key,
        });
    }
});

test('completions rows, stream and non-stream', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('development', 'l-cmpl');
    const c = gw.client(key.value);
    let mark = up.mark();
    const a = await c.completions.create({ model: 'gpt-4o-mini', prompt: 'legacy prompt here' }).withResponse();
    let [rec] = up.since(mark);
    await checkRow(gw, a.request_id, { endpoint: 'completions', model: 'gpt-4o-mini', usage: rec.usage, cost: expectedCost('gpt-4o-mini', rec.usage) });
    mark = up.mark();
    const b = await c.completions.create({ model: 'gpt-4o-mini', prompt: 'legacy prompt here', stream: true }).withResponse();
    await drain(b.data);
    [rec] = up.since(mark);
    await checkRow(gw, b.request_id, { endpoint: 'completions', model: 'gpt-4o-mini', stream: true, usage: rec.usage, cost: expectedCost('gpt-4o-mini', rec.usage) });
});

test('embeddings row: prompt tokens only, priced', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('staging', 'l-emb');
    const mark = up.mark();
    const { request_id } = await gw
        .client(key.value)
        .embeddings.create({ model: 'text-embedding-3-small', input: ['one two three', 'four five'] })
        .withResponse();
    const [rec] = up.since(mark);
    assert.equal(rec.usage.prompt_tokens, 5);
    await checkRow(gw, request_id, {
        endpoint: 'embeddings',
        model: 'text-embedding-3-small',
        usage: rec.usage,
        cost: expectedCost('text-embedding-3-small', rec.usage),
        key,
    });
});

test('responses rows, stream and non-stream', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('development', 'l-resp');
    const c = gw.client(key.value);
    let mark = up.mark();
    const a = await c.responses.create({ model: 'gpt-4o-mini', input: 'responses api row' }).withResponse();
    let [rec] = up.since(mark);
    await checkRow(gw, a.request_id, { endpoint: 'responses', model: 'gpt-4o-mini', usage: rec.usage, cost: expectedCost('gpt-4o-mini', rec.usage) });
    mark = up.mark();
    const b = await c.responses.create({ model: 'gpt-4o-mini', input: 'responses api row', stream: true }).withResponse();
    assert.equal(await drain(b.data), 'echo: responses api row');
    [rec] = up.since(mark);
    await checkRow(gw, b.request_id, { endpoint: 'responses', model: 'gpt-4o-mini', stream: true, usage: rec.usage, cost: expectedCost('gpt-4o-mini', rec.usage) });
});

test('moderations row: counted by request, no tokens', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKeyObject('staging', 'l-mod');
    const { request_id } = await gw.client(key.value).moderations.create({ model: 'omni-moderation-latest', input: 'fine' }).withResponse();
    await checkRow(gw, request_id, {
        endpoint: 'moderations',
        model: 'omni-moderation-latest',
        usage: { prompt_tokens: 0, cached_tokens: 0, completion_tokens: 0, reasoning_tokens: 0 },
        cost: 0,
        key,
    });
});

test('Azure row: provider az, deployment my-deployment', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('staging', 'l-az');
    const mark = up.mark();
    const { request_id } = await gw.client(key.value).chat.completions.create({ model: 'azure-4o', messages: msg('azure row') }).withResponse();
    const [rec] = up.since(mark);
    await checkRow(gw, request_id, { endpoint: 'chat.completions', model: 'azure-4o', provider: 'az', deployment: 'my-deployment', usage: rec.usage });
});

test('mock row: the usage the client saw, priced', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKeyObject('development', 'l-mock');
    const { data, request_id } = await gw.client(key.value).chat.completions.create({ model: 'mock-small', messages: msg('mock row') }).withResponse();
    const usage = {
        prompt_tokens: data.usage.prompt_tokens,
        cached_tokens: data.usage.prompt_tokens_details?.cached_tokens ?? 0,
        completion_tokens: data.usage.completion_tokens,
        reasoning_tokens: data.usage.completion_tokens_details?.reasoning_tokens ?? 0,
    };
    await checkRow(gw, request_id, { endpoint: 'chat.completions', model: 'mock-small', provider: 'mock', usage, cost: expectedCost('mock-small', usage) });
});

test('failed request row: upstream 500 recorded with its status and an error', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKeyObject('staging', 'l-500');
    const err = await gw
        .client(key.value, { maxRetries: 0 })
        .chat.completions.create({ model: 'fail-500', messages: msg('x') })
        .catch((e) => e);
    assert.equal(err.status, 500);
    const row = await checkRow(gw, err.requestID, {
        endpoint: 'chat.completions',
        model: 'fail-500',
        status: 500,
        usage: { prompt_tokens: 0, cached_tokens: 0, completion_tokens: 0, reasoning_tokens: 0 },
        cost: 0,
    });
    assert.ok(row.error, 'the row says why it failed');
});

test('client disconnects mid-stream: row with status 499 and the full upstream usage', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('staging', 'l-499');
    const mark = up.mark();
    const words = 'one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen';
    const { data: stream, request_id } = await gw
        .client(key.value, { maxRetries: 0 })
        .chat.completions.create({ model: 'slow-stream', messages: msg(words), stream: true })
        .withResponse();
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.done, false);
    const [rec] = (await up.waitForRequests(mark + 1)).slice(mark);
    assert.equal(up.heldCount, 1);
    stream.controller.abort();
    await it.return?.();
    up.release();
    await rec.closed;
    assert.equal(rec.completed, true, 'the gateway kept reading the upstream to the end for the usage');
    await checkRow(gw, request_id, {
        endpoint: 'chat.completions',
        model: 'slow-stream',
        stream: true,
        status: 499,
        usage: rec.usage,
        cost: expectedCost('slow-stream', rec.usage),
        key,
    });
});

test('client disconnects mid-stream on the Responses API: 499 with the usage of response.completed', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('staging', 'l-499-resp');
    const mark = up.mark();
    const { data: stream, request_id } = await gw
        .client(key.value, { maxRetries: 0 })
        .responses.create({ model: 'slow-stream', input: 'leave before the end of this answer', stream: true })
        .withResponse();
    const it = stream[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.type, 'response.created');
    const [rec] = (await up.waitForRequests(mark + 1)).slice(mark);
    stream.controller.abort();
    await it.return?.();
    up.release();
    await rec.closed;
    assert.equal(rec.completed, true);
    await checkRow(gw, request_id, {
        endpoint: 'responses',
        model: 'slow-stream',
        stream: true,
        status: 499,
        usage: rec.usage,
        cost: expectedCost('slow-stream', rec.usage),
    });
});

test('usage admin endpoint: totals by model and key equal the ledger and the upstream', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('production', 'l-usage');
    const c = gw.client(key.value);
    const mark = up.mark();
    const ids = [];
    ids.push((await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('usage one') }).withResponse()).request_id);
    ids.push((await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('usage two words') }).withResponse()).request_id);
    ids.push((await c.completions.create({ model: 'gpt-4o-mini', prompt: 'usage three' }).withResponse()).request_id);
    const s = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('usage four'), stream: true }).withResponse();
    await drain(s.data);
    ids.push(s.request_id);
    ids.push((await c.chat.completions.create({ model: 'mock-small', messages: msg('usage mock') }).withResponse()).request_id);
    const embId = (await c.embeddings.create({ model: 'text-embedding-3-small', input: 'usage emb' }).withResponse()).request_id;
    const rows = [];
    for (const id of [...ids, embId]) rows.push(...(await gw.waitLedger(id)));
    const recs = up.since(mark);

    const upSum = recs
        .filter((r) => r.endpoint !== 'embeddings')
        .reduce((a, r) => ({ i: a.i + r.usage.prompt_tokens, c: a.c + r.usage.cached_tokens, o: a.o + r.usage.completion_tokens }), { i: 0, c: 0, o: 0 });
    const start = Math.floor(Date.now() / 1000) - 3600;
    const q = `start_time=${start}&bucket_width=1h&group_by=model&group_by=api_key_id&api_key_ids=${key.id}&limit=24`;
    const r = await gw.adminFetch(`/v1/organization/usage/completions?${q}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'page');
    assert.equal(r.json.has_more, false);
    const results = r.json.data.flatMap((b) => {
        assert.equal(b.object, 'bucket');
        assert.ok(b.end_time > b.start_time);
        return b.results;
    });
    const byModel = {};
    for (const x of results) {
        assert.equal(x.object, 'organization.usage.completions.result');
        assert.equal(x.api_key_id, key.id);
        const m = (byModel[x.model] ??= { input: 0, cached: 0, output: 0, n: 0, cost: 0 });
        m.input += x.input_tokens;
        m.cached += x.input_cached_tokens;
        m.output += x.output_tokens;
        m.n += x.num_model_requests;
        m.cost += x.cost_micros;
    }
    const mini = rows.filter((x) => x.model_requested === 'gpt-4o-mini');
    const mock = rows.filter((x) => x.model_requested === 'mock-small');
    const sum = (rs, f) => rs.reduce((a, x) => a + x[f], 0);
    assert.deepEqual(byModel['gpt-4o-mini'], {
        input: upSum.i,
        cached: upSum.c,
        output: upSum.o,
        n: 4,
        cost: sum(mini, 'cost_micros'),
    });
    assert.deepEqual(byModel['mock-small'], {
        input: sum(mock, 'prompt_tokens'),
        cached: sum(mock, 'cached_tokens'),
        output: sum(mock, 'completion_tokens'),
        n: 1,
        cost: sum(mock, 'cost_micros'),
    });
    assert.deepEqual(Object.keys(byModel).sort(), ['gpt-4o-mini', 'mock-small']);

    const e = await gw.adminFetch(`/v1/organization/usage/embeddings?start_time=${start}&bucket_width=1d&group_by=model&api_key_ids=${key.id}`);
    assert.equal(e.status, 200, e.text);
    const eres = e.json.data.flatMap((b) => b.results);
    const embRec = recs.find((x) => x.endpoint === 'embeddings');
    assert.equal(eres.reduce((a, x) => a + x.input_tokens, 0), embRec.usage.prompt_tokens);
    assert.equal(eres.reduce((a, x) => a + x.num_model_requests, 0), 1);

    const p = await gw.adminFetch(`/v1/organization/usage/completions?start_time=${start}&group_by=project_id&project_ids=${key.project_id}`);
    assert.equal(p.status, 200, p.text);
    const pres = p.json.data.flatMap((b) => b.results);
    assert.ok(pres.length >= 1);
    for (const x of pres) {
        assert.equal(x.project_id, key.project_id);
        assert.equal(x.model, null, 'grouping fields are null unless grouped by');
    }
    assert.equal(pres.reduce((a, x) => a + x.num_model_requests, 0), 5);
    assert.equal(pres.reduce((a, x) => a + x.output_tokens, 0), upSum.o + sum(mock, 'completion_tokens'));
});

test('graceful stop with streams in flight: they finish, and no ledger row is lost', { timeout: 90000 * SLOW }, async () => {
    const { up } = ctx;
    const gw2 = await startGateway({ upstream: up, upstreamKey: ctx.upstreamKey, azureKey: ctx.azureKey });
    let stopped = false;
    try {
        const key = await gw2.createKeyObject('staging', 'l-drain');
        const c = gw2.client(key.value, { maxRetries: 0 });
        const done = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('finished before stop') }).withResponse();
        const mark = up.mark();
        const inflight = [];
        for (let i = 0; i < 3; i++) {
            inflight.push(
                await c.chat.completions
                    .create({
                        model: 'slow-stream',
                        messages: msg(`drain number ${i} a b c d e f g`),
                        stream: true,
                        ...(i === 0 ? { stream_options: { include_usage: true } } : {}),
                    })
                    .withResponse(),
            );
        }
        await up.waitForRequests(mark + 3);
        assert.equal(up.heldCount, 3);
        const exit = gw2.stop();
        stopped = true;
        // Wait until the gateway has taken the signal: /readyz stops answering 200.
        const end = Date.now() + 10000 * SLOW;
        for (;;) {
            const st = await fetch(`${gw2.url}/readyz`).then((r) => r.status, () => 0);
            if (st !== 200) break;
            assert.ok(Date.now() < end, '/readyz still 200 long after SIGTERM');
            await new Promise((r) => setTimeout(r, 20));
        }
        up.release();
        const texts = await Promise.all(inflight.map((x) => drain(x.data)));
        texts.forEach((t, i) => assert.equal(t, `echo: drain number ${i} a b c d e f g`));
        await exit;
        await gw2.stopAndCheck();
        const rows = await gw2.readLedger();
        const recs = up.since(mark);
        const want = [done.request_id, ...inflight.map((x) => x.request_id)];
        for (const id of want) assert.equal(rows.filter((r) => r.request_id === id).length, 1, `row for ${id}`);
        inflight.forEach((x, i) => {
            const row = rows.find((r) => r.request_id === x.request_id);
            const rec = recs.find((r) => r.body.messages[0].content === `drain number ${i} a b c d e f g`);
            assert.equal(row.status, 200);
            assert.deepEqual(tokensOf(row), rec.usage);
        });
        gw2.cleanup();
    } finally {
        if (!stopped) await gw2.stopAndCheck();
        else if (!gw2.exit) gw2.kill();
    }
});

shutdownTest(ctx);
