// streaming.test.mjs: SSE through tollgate. Chat and completions streams with and without
// include_usage (the upstream always gets include_usage true; the client sees the usage chunk
// only when it asked), exact framing (data: lines, [DONE]), Responses named events, and
// streams that go wrong upstream (cut, garbage) never looking like a clean end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';

const ctx = useGateway();

async function collect(stream) {
    const out = [];
    for await (const c of stream) out.push(c);
    return out;
}

// POSTs body to the gateway with key and returns the raw SSE text.
async function rawStream(gw, key, path, body) {
    const r = await fetch(gw.v1 + path, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
    });
    return { status: r.status, headers: r.headers, text: await r.text() };
}

function dataLines(text) {
    return text
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trim());
}

test('chat stream without include_usage: no usage chunk; upstream was asked for usage', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 's-nousage');
    const mark = up.mark();
    const { data: s, response } = await gw
        .client(key)
        .chat.completions.create({ model: 'gpt-4o-mini', messages: msg('one two three'), stream: true })
        .withResponse();
    assert.match(response.headers.get('content-type'), /text\/event-stream/);
    assert.match(response.headers.get('x-request-id'), /^req_/);
    const chunks = await collect(s);
    assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), 'echo: one two three');
    for (const c of chunks) {
        assert.equal(c.choices.length, 1, 'no empty-choices chunk');
        assert.ok(!c.usage, 'no usage on any chunk');
        assert.equal(c.object, 'chat.completion.chunk');
    }
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
    const [rec] = up.since(mark);
    assert.equal(rec.body.stream, true);
    assert.deepEqual(rec.body.stream_options, { include_usage: true });
});

test('chat stream with include_usage: one final usage chunk equal to the upstream usage', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 's-usage');
    const mark = up.mark();
    const s = await gw.client(key).chat.completions.create({
        model: 'gpt-4o-mini',
        messages: msg('one two three four'),
        stream: true,
        stream_options: { include_usage: true },
    });
    const chunks = await collect(s);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(chunks.filter((c) => c.choices.length === 0).length, 1);
    const [rec] = up.since(mark);
    assert.equal(last.usage.prompt_tokens, rec.usage.prompt_tokens);
    assert.equal(last.usage.completion_tokens, rec.usage.completion_tokens);
    assert.equal(last.usage.prompt_tokens_details.cached_tokens, 3);
    assert.equal(last.usage.completion_tokens_details.reasoning_tokens, 2);
});

test('include_usage false explicitly: no usage chunk, upstream still asked for usage', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 's-false');
    const mark = up.mark();
    const s = await gw.client(key).chat.completions.create({
        model: 'gpt-4o-mini',
        messages: msg('x y'),
        stream: true,
        stream_options: { include_usage: false },
    });
    const chunks = await collect(s);
    assert.ok(chunks.every((c) => c.choices.length === 1 && !c.usage));
    assert.equal(up.since(mark)[0].body.stream_options.include_usage, true);
});

test('chat stream framing: data: lines only, JSON each, ends with data: [DONE]', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('development', 's-raw');
    const r = await rawStream(gw, key, '/chat/completions', { model: 'gpt-4o-mini', messages: msg('raw framing'), stream: true });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /^text\/event-stream/);
    assert.ok(!/^event:/m.test(r.text), 'no event: lines in a chat stream');
    const data = dataLines(r.text);
    assert.equal(data.at(-1), '[DONE]');
    assert.equal(data.filter((d) => d === '[DONE]').length, 1);
    for (const d of data.slice(0, -1)) {
        const j = JSON.parse(d);
        assert.equal(j.object, 'chat.completion.chunk');
        assert.ok(j.choices.length === 1, 'hidden usage chunk must not leak');
    }
    assert.ok(r.text.endsWith('data: [DONE]\n\n'));
});

test('completions stream with and without include_usage', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 's-cmpl');
    const c = gw.client(key);
    const mark = up.mark();
    const a = await collect(await c.completions.create({ model: 'gpt-4o-mini', prompt: 'p q r', stream: true }));
    assert.equal(a.map((x) => x.choices[0].text).join(''), 'echo: p q r');
    assert.ok(a.every((x) => x.choices.length === 1 && !x.usage));
    const b = await collect(
        await c.completions.create({ model: 'gpt-4o-mini', prompt: 'p q r', stream: true, stream_options: { include_usage: true } }),
    );
    assert.deepEqual(b.at(-1).choices, []);
    assert.equal(b.at(-1).usage.completion_tokens, up.since(mark)[1].usage.completion_tokens);
    for (const rec of up.since(mark)) {
        assert.equal(rec.path, '/v1/completions');
        assert.equal(rec.body.stream_options.include_usage, true);
    }
});

test('responses stream: named events in order, sequence numbers rising, usage in response.completed', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 's-resp');
    const mark = up.mark();
    const s = await gw.client(key).responses.create({ model: 'gpt-4o-mini', input: 'stream the response', stream: true });
    const events = await collect(s);
    assert.equal(events[0].type, 'response.created');
    assert.equal(events.at(-1).type, 'response.completed');
    for (let i = 1; i < events.length; i++) assert.ok(events[i].sequence_number > events[i - 1].sequence_number);
    const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(text, 'echo: stream the response');
    const [rec] = up.since(mark);
    assert.equal(rec.path, '/v1/responses');
    assert.equal(rec.body.stream_options?.include_usage, undefined, 'Responses has no include_usage (usage is in response.completed)');
    assert.equal(events.at(-1).response.usage.input_tokens, rec.usage.prompt_tokens);
    assert.equal(events.at(-1).response.usage.output_tokens, rec.usage.completion_tokens);

    const r = await rawStream(gw, key, '/responses', { model: 'gpt-4o-mini', input: 'raw', stream: true });
    assert.equal(r.status, 200);
    assert.match(r.text, /^event: response\.created\ndata: /m);
    assert.ok(!r.text.includes('[DONE]'), 'no [DONE] in a Responses stream');
});

test('chat stream cut by the upstream: the SDK iterator throws an APIError (server_error)', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 's-cut');
    const s = await gw.client(key).chat.completions.create({ model: 'cut-stream', messages: msg('a b c d e f'), stream: true });
    const got = [];
    const err = await (async () => {
        try {
            for await (const c of s) got.push(c);
        } catch (e) {
            return e;
        }
        return null;
    })();
    assert.ok(err, `the stream ended cleanly after ${got.length} chunks`);
    assert.ok(err instanceof OpenAI.APIError, `${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.error?.type, 'server_error');
    assert.ok(got.length >= 1, 'the chunks sent before the cut were relayed');

    const r = await rawStream(gw, key, '/chat/completions', { model: 'cut-stream', messages: msg('a b c d e f'), stream: true });
    const errs = dataLines(r.text)
        .filter((d) => d !== '[DONE]')
        .map((d) => JSON.parse(d))
        .filter((j) => j.error);
    assert.equal(errs.length, 1);
    for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in errs[0].error, `error.${k}`);
});

test('a cut stream is billed for its prompt and the chunks delivered, marked as estimated', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 's-cut-bill');
    const body = { model: 'cut-stream', messages: msg('a b c d e f'), stream: true };
    const r = await rawStream(gw, key, '/chat/completions', body);
    const chunks = dataLines(r.text)
        .filter((d) => d !== '[DONE]')
        .map((d) => JSON.parse(d))
        .filter((j) => Array.isArray(j.choices) && j.choices.length > 0);
    assert.ok(chunks.length >= 2, `relayed ${chunks.length} chunks`);
    const [row] = await gw.waitLedger(r.headers.get('x-request-id'));
    assert.equal(Number(row.is_usage_estimated), 1);
    assert.equal(Number(row.completion_tokens), chunks.length, 'one token per chunk delivered');
    assert.ok(Number(row.prompt_tokens) > 0, 'the prompt is billed');
    assert.notEqual(row.error, '');
});

test('completions stream cut by the upstream ends with an error event', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 's-cut-cmpl');
    const s = await gw.client(key).completions.create({ model: 'cut-stream', prompt: 'a b c d e f', stream: true });
    await assert.rejects(collect(s), OpenAI.APIError);
});

test('responses stream cut by the upstream: event: error (nested) then response.failed', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 's-cut-resp');
    const s = await gw.client(key).responses.create({ model: 'cut-stream', input: 'a b c d e f', stream: true });
    await assert.rejects(collect(s), OpenAI.APIError);

    const r = await rawStream(gw, key, '/responses', { model: 'cut-stream', input: 'a b c d e f', stream: true });
    const blocks = r.text.split('\n\n').filter(Boolean);
    const named = blocks.map((b) => {
        const ev = /^event: (.*)$/m.exec(b);
        const d = /^data: (.*)$/m.exec(b);
        return { event: ev && ev[1], data: d && JSON.parse(d[1]) };
    });
    const iErr = named.findIndex((x) => x.event === 'error');
    assert.ok(iErr >= 0, 'an event: error');
    assert.equal(typeof named[iErr].data.error, 'object', 'nested error object');
    assert.equal(named[iErr].data.type, 'error');
    const iFailed = named.findIndex((x) => x.event === 'response.failed');
    assert.ok(iFailed > iErr, 'response.failed after the error event');
    assert.equal(named.filter((x) => x.event === 'response.completed').length, 0);
});

test('garbage upstream stream: the client never sees a clean end', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 's-garbage');
    const s = await gw.client(key).chat.completions.create({ model: 'garbage-stream', messages: msg('x'), stream: true });
    await assert.rejects(collect(s));
});

test('the gateway still streams normally afterwards', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('development', 's-after');
    const chunks = await collect(
        await gw.client(key).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('still fine'), stream: true }),
    );
    assert.equal(chunks.map((c) => c.choices[0].delta.content ?? '').join(''), 'echo: still fine');
});

shutdownTest(ctx);
