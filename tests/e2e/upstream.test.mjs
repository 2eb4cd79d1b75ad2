// upstream.test.mjs: checks the scripted upstream itself against the official openai SDK
// (no gateway involved), so a failure in the gateway tests is never the upstream's fault.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { AzureOpenAI } from 'openai';
import { startUpstream, usageFor, embeddingFor } from './lib/upstream.mjs';

const KEY = 'placeholder-upstream-key';
const AZ_KEY = 'az-test-upstream-selfcheck';
let up;
let client;

before(async () => {
    up = await startUpstream({ apiKey: KEY, azureKey: AZ_KEY, slowFirstByteMs: 300, holdMs: 5000 });
    client = new OpenAI({ apiKey: KEY, baseURL: up.v1, maxRetries: 2 });
});

after(async () => {
    await up.close();
});

test('chat non-stream: shape and documented usage', async () => {
    const mark = up.mark();
    const { data, response } = await client.chat.completions
        .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'say hi' }] })
        .withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices[0].message.content, 'echo: say hi');
    assert.deepEqual(
        [data.usage.prompt_tokens, data.usage.prompt_tokens_details.cached_tokens, data.usage.completion_tokens, data.usage.completion_tokens_details.reasoning_tokens],
        [12, 3, 5, 2],
    );
    assert.match(response.headers.get('x-request-id'), /^req_/);
    const [rec] = up.since(mark);
    assert.equal(rec.headers.authorization, `Bearer ${KEY}`);
    assert.deepEqual(rec.usage, { prompt_tokens: 12, cached_tokens: 3, completion_tokens: 5, reasoning_tokens: 2 });
});

test('chat stream with and without include_usage', async () => {
    const s1 = await client.chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'one two three' }],
        stream: true,
        stream_options: { include_usage: true },
    });
    let text = '';
    let usage = null;
    let chunks = 0;
    for await (const c of s1) {
        chunks++;
        if (c.choices.length) text += c.choices[0].delta.content ?? '';
        if (c.usage) usage = c.usage;
    }
    assert.equal(text, 'echo: one two three');
    assert.equal(usage.completion_tokens, 6);
    assert.equal(chunks, 1 + 4 + 1 + 1);

    const s2 = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream: true });
    const all = [];
    for await (const c of s2) all.push(c);
    assert.ok(all.every((c) => c.choices.length === 1 && !('usage' in c)));
});

test('completions, responses (json and stream), moderations', async () => {
    const c = await client.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'a b' });
    assert.equal(c.choices[0].text, 'echo: a b');
    assert.deepEqual(c.usage.prompt_tokens, 12);

    const r = await client.responses.create({ model: 'gpt-4o-mini', input: 'hello there' });
    assert.equal(r.output_text, 'echo: hello there');
    assert.equal(r.usage.output_tokens, 5);

    const rs = await client.responses.create({ model: 'gpt-4o-mini', input: 'hello there', stream: true });
    const types = [];
    let completed = null;
    for await (const ev of rs) {
        types.push(ev.type);
        if (ev.type === 'response.completed') completed = ev;
    }
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    assert.deepEqual(completed.response.usage.input_tokens, 12);

    const m = await client.moderations.create({ model: 'omni-moderation-latest', input: ['kill it', 'hug it'] });
    assert.deepEqual(m.results.map((x) => x.flagged), [true, false]);
});

test('embeddings: base64 default decodes to the float vectors', async () => {
    const e = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta gamma'] });
    assert.deepEqual(e.data[1].embedding, embeddingFor('beta gamma', 1));
    assert.equal(e.usage.prompt_tokens, 3);
    const f = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'alpha', encoding_format: 'float' });
    assert.deepEqual(f.data[0].embedding, embeddingFor('alpha', 0));
    assert.deepEqual(usageFor('embeddings', { input: ['alpha', 'beta gamma'] }).prompt_tokens, 3);
});

test('azure paths with the AzureOpenAI client', async () => {
    const az = new AzureOpenAI({ apiKey: AZ_KEY, endpoint: up.url, apiVersion: '2024-10-21', deployment: 'my-deployment' });
    const mark = up.mark();
    const r = await az.chat.completions.create({ model: 'my-deployment', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(r.choices[0].message.content, 'echo: hi');
    const s = await az.chat.completions.create({ model: 'my-deployment', messages: [{ role: 'user', content: 'hi' }], stream: true });
    const chunks = [];
    for await (const c of s) chunks.push(c);
    assert.equal(chunks[0].choices.length, 0);
    assert.ok(chunks[0].prompt_filter_results);
    const recs = up.since(mark);
    assert.equal(recs[0].azure.deployment, 'my-deployment');
    assert.equal(recs[0].azure.apiVersion, '2024-10-21');
    assert.equal(recs[0].headers['api-key'], AZ_KEY);
});

test('misbehaviours through the SDK', async () => {
    const mark = up.mark();
    await assert.rejects(
        client.chat.completions.create({ model: 'fail-500', messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 1 }),
        OpenAI.InternalServerError,
    );
    assert.equal(up.since(mark).length, 2);
    const err = await client.chat.completions
        .create({ model: 'fail-429', messages: [{ role: 'user', content: 'x' }] }, { maxRetries: 0 })
        .catch((e) => e);
    assert.ok(err instanceof OpenAI.RateLimitError);
    assert.equal(err.headers.get('retry-after-ms'), '10');
    const ok = await client.chat.completions.create({ model: 'flaky-429', messages: [{ role: 'user', content: 'flaky self' }] });
    assert.equal(ok.choices[0].message.content, 'echo: flaky self');
    const cut = await client.chat.completions.create({ model: 'cut-stream', messages: [{ role: 'user', content: 'a b c d' }], stream: true });
    await assert.rejects(async () => {
        for await (const _ of cut) void _;
    });
    await assert.rejects(
        client.chat.completions.create({ model: 'slow-first-byte', messages: [{ role: 'user', content: 'x' }] }, { timeout: 100, maxRetries: 0 }),
        OpenAI.APIConnectionTimeoutError,
    );
    const bad = await client.chat.completions
        .create({ model: 'bad-json', messages: [{ role: 'user', content: 'x' }] })
        .catch((e) => e);
    assert.ok(bad instanceof Error);
    const g = await client.chat.completions.create({ model: 'garbage-stream', messages: [{ role: 'user', content: 'x' }], stream: true });
    await assert.rejects(async () => {
        for await (const _ of g) void _;
    });
});

test('slow-stream holds until release()', async () => {
    const mark = up.mark();
    const s = await client.chat.completions.create({
        model: 'slow-stream',
        messages: [{ role: 'user', content: 'a b c d e' }],
        stream: true,
        stream_options: { include_usage: true },
    });
    const it = s[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.value.choices[0].delta.role, 'assistant');
    await up.waitForRequests(mark + 1);
    assert.equal(up.heldCount, 1);
    assert.equal(up.release(), 1);
    let text = first.value.choices[0].delta.content;
    for (let r = await it.next(); !r.done; r = await it.next()) {
        if (r.value.choices.length) text += r.value.choices[0].delta.content ?? '';
    }
    assert.equal(text, 'echo: a b c d e');
    await up.since(mark)[0].closed;
    assert.equal(up.since(mark)[0].completed, true);
});

test('strict like OpenAI: stream_options without stream, include_usage on Responses', async () => {
    await assert.rejects(
        client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }], stream_options: { include_usage: true } }),
        (e) => e instanceof OpenAI.BadRequestError && e.param === 'stream_options',
    );
    await assert.rejects(
        client.responses.create({ model: 'gpt-4o-mini', input: 'x', stream: true, stream_options: { include_usage: true } }),
        (e) => e instanceof OpenAI.BadRequestError && e.code === 'unknown_parameter',
    );
});

test('wrong key is refused by the upstream', async () => {
    const bad = new OpenAI({ apiKey: 'placeholder-wrong-key', baseURL: up.v1, maxRetries: 0 });
    await assert.rejects(bad.models.list(), OpenAI.NotFoundError);
    await assert.rejects(
        bad.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }),
        OpenAI.AuthenticationError,
    );
});
