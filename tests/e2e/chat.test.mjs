// chat.test.mjs: chat completions through tollgate with the official SDK: the answer and
// usage are the upstream's, the upstream sees the provider key (never the client's), model
// routing (exact, "*", upstream_model), Azure routing and the mock provider.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { upstreamLeaks, TG_KEY_RE } from './lib/gateway.mjs';
import { usageFor } from './lib/upstream.mjs';

const ctx = useGateway();

function usageOf(u) {
    return {
        prompt_tokens: u.prompt_tokens,
        cached_tokens: u.prompt_tokens_details?.cached_tokens ?? 0,
        completion_tokens: u.completion_tokens,
        reasoning_tokens: u.completion_tokens_details?.reasoning_tokens ?? 0,
    };
}

test('chat non-stream: the SDK gets the upstream answer, its usage and an x-request-id', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'chat-basic');
    const mark = up.mark();
    const { data, response, request_id } = await gw
        .client(key)
        .chat.completions.create({ model: 'gpt-4o-mini', messages: msg('say hi') })
        .withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices.length, 1);
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].message.content, 'echo: say hi');
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.deepEqual(usageOf(data.usage), { prompt_tokens: 12, cached_tokens: 3, completion_tokens: 5, reasoning_tokens: 2 });
    assert.equal(data.usage.total_tokens, 17);
    assert.match(response.headers.get('content-type'), /application\/json/);
    assert.match(request_id, /^req_/);
    const recs = up.since(mark);
    assert.equal(recs.length, 1);
    assert.equal(recs[0].path, '/v1/chat/completions');
    assert.equal(recs[0].body.model, 'gpt-4o-mini');
    assert.deepEqual(recs[0].body.messages, msg('say hi'));
    assert.deepEqual(usageOf(data.usage), recs[0].usage);
});

test('the upstream gets the provider key and never the client key, in any header or body', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'leak-check');
    const c = gw.client(key, { defaultHeaders: { 'OpenAI-Project': 'staging' } });
    const mark = up.mark();
    await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('leak check') });
    const s = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('stream me'), stream: true });
    for await (const _ of s) void _;
    await c.completions.create({ model: 'gpt-4o-mini', prompt: 'legacy' });
    await c.embeddings.create({ model: 'text-embedding-3-small', input: 'vec' });
    await c.responses.create({ model: 'gpt-4o-mini', input: 'resp' });
    await c.moderations.create({ model: 'omni-moderation-latest', input: 'mod' });
    await c.chat.completions.create({ model: 'azure-4o', messages: msg('azure') });
    const recs = up.since(mark);
    assert.equal(recs.length, 7);
    for (const r of recs) {
        assert.doesNotMatch(JSON.stringify(r.headers), TG_KEY_RE, `tg- key in headers of ${r.path}`);
        assert.ok(!r.rawBody.toString('latin1').includes(key), `client key in body of ${r.path}`);
        if (r.azure) {
            assert.equal(r.headers['api-key'], ctx.azureKey);
        } else {
            assert.equal(r.headers.authorization, `Bearer ${ctx.upstreamKey}`, `Authorization of ${r.path}`);
        }
    }
    assert.deepEqual(upstreamLeaks(recs, { upstreamKey: ctx.upstreamKey, azureKey: ctx.azureKey, clientKeys: [key] }), []);
});

test('request fields reach the upstream unchanged', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'passthrough');
    const body = {
        model: 'gpt-4o-mini',
        messages: [
            { role: 'developer', content: 'be brief' },
            { role: 'user', content: [{ type: 'text', text: 'weather in Oslo?' }] },
        ],
        temperature: 0.25,
        top_p: 0.5,
        seed: 42,
        n: 2,
        stop: ['\n\n'],
        max_completion_tokens: 100,
        tools: [
            {
                type: 'function',
                function: { name: 'get_weather', description: 'w', parameters: { type: 'object', properties: { city: { type: 'string' } } } },
            },
        ],
        tool_choice: 'auto',
        metadata: { suite: 'e2e' },
        user: 'user-1234',
        response_format: { type: 'text' },
    };
    const mark = up.mark();
    const r = await gw.client(key).chat.completions.create(body);
    assert.equal(r.choices.length, 2);
    assert.equal(r.usage.completion_tokens, usageFor('chat.completions', body).completion_tokens);
    const [rec] = up.since(mark);
    for (const [k, v] of Object.entries(body)) assert.deepEqual(rec.body[k], v, `field ${k}`);
});

test('"*" route passes an unlisted model name through unchanged', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'star');
    const mark = up.mark();
    const r = await gw.client(key).chat.completions.create({ model: 'ft:gpt-4o-mini-2024-07-18:acme::AbC123', messages: msg('star') });
    assert.equal(r.choices[0].message.content, 'echo: star');
    const [rec] = up.since(mark);
    assert.equal(rec.path, '/v1/chat/completions');
    assert.equal(rec.body.model, 'ft:gpt-4o-mini-2024-07-18:acme::AbC123');
});

test('Azure: deployment path, api-version, api-key header, model replaced by the deployment', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'azure');
    const mark = up.mark();
    const r = await gw.client(key).chat.completions.create({ model: 'azure-4o', messages: msg('hello azure') });
    assert.equal(r.choices[0].message.content, 'echo: hello azure');
    assert.equal(r.usage.prompt_tokens, 12);
    const [rec] = up.since(mark);
    assert.equal(rec.path, '/openai/deployments/my-deployment/chat/completions');
    assert.deepEqual(rec.azure, { deployment: 'my-deployment', apiVersion: '2024-10-21' });
    assert.equal(rec.headers['api-key'], ctx.azureKey);
    assert.ok(!rec.headers.authorization || !rec.headers.authorization.includes(key));
    assert.equal(rec.body.model, 'my-deployment');
});

test('Azure stream: the leading prompt_filter_results chunk is not shown to the client', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'azure-stream');
    const mark = up.mark();
    const s = await gw.client(key).chat.completions.create({ model: 'azure-4o', messages: msg('a b c'), stream: true });
    const chunks = [];
    for await (const c of s) chunks.push(c);
    assert.ok(chunks.length > 0);
    for (const c of chunks) {
        assert.equal(c.choices.length, 1, `chunk with ${c.choices.length} choices: ${JSON.stringify(c)}`);
        assert.equal(c.prompt_filter_results, undefined);
    }
    assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), 'echo: a b c');
    const [rec] = up.since(mark);
    assert.equal(rec.path, '/openai/deployments/my-deployment/chat/completions');
    assert.equal(rec.body.stream_options?.include_usage, true);

    const s2 = await gw.client(key).chat.completions.create({
        model: 'azure-4o',
        messages: msg('a b c'),
        stream: true,
        stream_options: { include_usage: true },
    });
    const c2 = [];
    for await (const c of s2) c2.push(c);
    const empty = c2.filter((c) => c.choices.length === 0);
    assert.equal(empty.length, 1, 'exactly one empty-choices chunk (the usage chunk)');
    assert.equal(c2.at(-1).choices.length, 0);
    assert.equal(c2.at(-1).usage.completion_tokens, up.since(mark)[1].usage.completion_tokens);
});

test('mock provider answers in-process with usage, without calling the upstream', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'mock');
    const mark = up.mark();
    const r = await gw.client(key).chat.completions.create({ model: 'mock-small', messages: msg('hi mock') });
    assert.equal(r.object, 'chat.completion');
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.ok(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
    const s = await gw.client(key).chat.completions.create({
        model: 'mock-small',
        messages: msg('hi mock'),
        stream: true,
        stream_options: { include_usage: true },
    });
    let usage = null;
    for await (const c of s) if (c.usage) usage = c.usage;
    assert.ok(usage && usage.completion_tokens > 0);
    assert.equal(up.since(mark).length, 0);
});

shutdownTest(ctx);
