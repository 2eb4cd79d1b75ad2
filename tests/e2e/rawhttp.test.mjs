// rawhttp.test.mjs: bytes no SDK would send, over node:net: malformed and mistyped JSON,
// invalid UTF-8, deep nesting, oversized headers, half-sent requests, unknown routes and
// methods. Each gets a clear OpenAI-style error (or, for a stalled request, 408 or a close),
// never a crash: the gateway serves a normal request after each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { rawExchange, rawRequest } from './lib/raw.mjs';
import { SLOW } from './lib/gateway.mjs';

const ctx = useGateway();

function post(key, path, body, extraHeaders = {}) {
    return rawRequest('POST', path, { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', ...extraHeaders }, body);
}

function assertOpenAIError(r, status, param) {
    assert.equal(r.status, status, `status (got ${r.raw.slice(0, 300)})`);
    assert.ok(r.json && r.json.error, 'an error object');
    for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in r.json.error, `error.${k}`);
    if (status === 400) assert.equal(r.json.error.type, 'invalid_request_error');
    if (param !== undefined) assert.equal(r.json.error.param, param);
    assert.match(r.headers['x-request-id'] ?? '', /^req_/);
}

async function stillServes(key) {
    const r = await ctx.gw.client(key).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('still here') });
    assert.equal(r.choices[0].message.content, 'echo: still here');
}

test('malformed JSON -> 400', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-json');
    const mark = ctx.up.mark();
    for (const body of ['{"model": "gpt-4o-mini", "messages": [', '{model: 1}', 'null x', '']) {
        const r = await rawExchange(ctx.gw.port, [post(key, '/v1/chat/completions', body)]);
        assertOpenAIError(r, 400);
    }
    assert.equal(ctx.up.since(mark).length, 0);
    await stillServes(key);
});

test('a JSON body that is not an object -> 400', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-array');
    for (const body of ['[]', '"text"', '42']) {
        const r = await rawExchange(ctx.gw.port, [post(key, '/v1/chat/completions', body)]);
        assertOpenAIError(r, 400);
    }
});

test('missing model and wrong types -> 400 naming the param', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-types');
    const cases = [
        [{ messages: msg('x') }, 'model'],
        [{ model: null, messages: msg('x') }, 'model'],
        [{ model: ['gpt-4o-mini'], messages: msg('x') }, 'model'],
        [{ model: 'gpt-4o-mini', messages: msg('x'), stream: 1 }, 'stream'],
        [{ model: 'gpt-4o-mini', messages: msg('x'), stream_options: { include_usage: true } }, 'stream_options'],
    ];
    for (const [body, param] of cases) {
        const r = await rawExchange(ctx.gw.port, [post(key, '/v1/chat/completions', JSON.stringify(body))]);
        assertOpenAIError(r, 400, param);
    }
    const e = await rawExchange(ctx.gw.port, [post(key, '/v1/embeddings', JSON.stringify({ input: 'x' }))]);
    assertOpenAIError(e, 400, 'model');
    await stillServes(key);
});

test('invalid UTF-8 in the body -> 400', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-utf8');
    const mark = ctx.up.mark();
    const body = Buffer.concat([
        Buffer.from('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'),
        Buffer.from([0xff, 0xfe, 0xc3, 0x28]),
        Buffer.from('"}]}'),
    ]);
    const r = await rawExchange(ctx.gw.port, [post(key, '/v1/chat/completions', body)]);
    assertOpenAIError(r, 400);
    assert.equal(ctx.up.since(mark).length, 0);
    await stillServes(key);
});

test('JSON nested deeper than the limit -> 400', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-deep');
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    const body = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"metadata":${deep}}`;
    const r = await rawExchange(ctx.gw.port, [post(key, '/v1/chat/completions', body)]);
    assertOpenAIError(r, 400);
    await stillServes(key);
});

test('oversized headers -> 431', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-431');
    const big = rawRequest('GET', '/v1/models', { Authorization: `Bearer ${key}`, 'X-Big': 'a'.repeat(20000) });
    const r = await rawExchange(ctx.gw.port, [big]);
    assert.equal(r.status, 431, r.raw.slice(0, 200));
    const many = {};
    for (let i = 0; i < 150; i++) many[`X-H${i}`] = 'v';
    const r2 = await rawExchange(ctx.gw.port, [rawRequest('GET', '/v1/models', { Authorization: `Bearer ${key}`, ...many })]);
    assert.equal(r2.status, 431, r2.raw.slice(0, 200));
    await stillServes(key);
});

test('half-sent request line/headers -> 408 or close, within the header timeout', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-slow-head');
    const r = await rawExchange(ctx.gw.port, ['POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthori'], {
        deadlineMs: 10000 * SLOW,
        waitClose: true,
    });
    assert.equal(r.timedOut, false, 'the gateway must not wait forever for headers');
    assert.ok(r.status === null || r.status === 408, `status ${r.status}`);
    assert.ok(r.closed);
    await stillServes(key);
});

test('half-sent body -> 408 or close, within the body timeout', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-slow-body');
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n`;
    const r = await rawExchange(ctx.gw.port, [head, '{"model":"gpt-4o-mini",'], { deadlineMs: 10000 * SLOW, waitClose: true });
    assert.equal(r.timedOut, false, 'the gateway must not wait forever for the body');
    assert.ok(r.status === null || r.status === 408, `status ${r.status}`);
    await stillServes(key);
});

test('unknown route -> 404 "Invalid URL (POST /v1/foo)"', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-404');
    const r = await rawExchange(ctx.gw.port, [post(key, '/v1/foo', '{}')]);
    assertOpenAIError(r, 404);
    assert.equal(r.json.error.message, 'Invalid URL (POST /v1/foo)');
});

test('wrong method -> 405', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-405');
    const r = await rawExchange(ctx.gw.port, [rawRequest('GET', '/v1/chat/completions', { Authorization: `Bearer ${key}` })]);
    assertOpenAIError(r, 405);
    const r2 = await rawExchange(ctx.gw.port, [rawRequest('DELETE', '/v1/embeddings', { Authorization: `Bearer ${key}` })]);
    assert.equal(r2.status, 405);
});

test('chunked request body is accepted', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-chunked');
    const body = JSON.stringify({ model: 'gpt-4o-mini', messages: msg('chunked body') });
    const a = body.slice(0, 20);
    const b = body.slice(20);
    const req =
        `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\n` +
        `Transfer-Encoding: chunked\r\n\r\n${a.length.toString(16)}\r\n${a}\r\n${Buffer.byteLength(b).toString(16)}\r\n${b}\r\n0\r\n\r\n`;
    const r = await rawExchange(ctx.gw.port, [req]);
    assert.equal(r.status, 200, r.raw.slice(0, 300));
    assert.equal(r.json.choices[0].message.content, 'echo: chunked body');
});

test('keep-alive: two requests on one connection are both answered', T, async () => {
    const key = await ctx.gw.createKey('development', 'raw-keepalive');
    const one = post(key, '/v1/chat/completions', JSON.stringify({ model: 'gpt-4o-mini', messages: msg('first') }));
    const two = rawRequest('GET', '/healthz', { Connection: 'close' });
    const r = await rawExchange(ctx.gw.port, [one, two], { waitClose: true });
    const statuses = [...r.raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 200]);
    assert.ok(r.raw.includes('echo: first'));
});

test('healthz and readyz', T, async () => {
    const h = await ctx.gw.rawFetch('/healthz');
    assert.equal(h.status, 200);
    assert.deepEqual(h.json, { status: 'ok' });
    const r = await ctx.gw.rawFetch('/readyz');
    assert.equal(r.status, 200);
});

shutdownTest(ctx);
