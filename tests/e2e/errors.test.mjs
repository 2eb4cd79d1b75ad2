// errors.test.mjs: what the SDK sees when something is wrong: the right error class, status,
// OpenAI error object (message, type, param, code), x-request-id in error.requestID, and the
// SDK's retries behaving as they do against OpenAI (counted at the upstream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { newTollgateKey } from './lib/gateway.mjs';

const ctx = useGateway({ upstream: { slowFirstByteMs: 5000 } });

async function failure(promise) {
    try {
        await promise;
    } catch (e) {
        return e;
    }
    assert.fail('expected the call to fail');
}

function assertErrorObject(err) {
    assert.ok(err.error && typeof err.error === 'object', 'an OpenAI error object');
    for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in err.error, `error.${k} present`);
    assert.equal(typeof err.error.message, 'string');
    assert.match(err.requestID ?? '', /^req_/, 'x-request-id reaches error.requestID');
}

test('upstream 500 -> InternalServerError after 3 upstream attempts (SDK maxRetries 2)', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'e500');
    const mark = up.mark();
    const err = await failure(gw.client(key).chat.completions.create({ model: 'fail-500', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 500);
    assert.equal(err.error.type, 'server_error');
    assert.match(err.error.message, /The server had an error/);
    assertErrorObject(err);
    assert.equal(up.since(mark).length, 3);
});

test('upstream 429 -> RateLimitError with retry-after, retry-after-ms and x-ratelimit-* passed through', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'e429');
    const mark = up.mark();
    const err = await failure(gw.client(key, { maxRetries: 0 }).chat.completions.create({ model: 'fail-429', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.RateLimitError, String(err));
    assert.equal(err.status, 429);
    assert.equal(err.error.type, 'requests');
    assert.equal(err.error.code, 'rate_limit_exceeded');
    assertErrorObject(err);
    assert.equal(err.headers.get('retry-after'), '1');
    assert.equal(err.headers.get('retry-after-ms'), '10');
    assert.equal(err.headers.get('x-ratelimit-limit-requests'), '3');
    assert.equal(err.headers.get('x-ratelimit-remaining-requests'), '0');
    assert.equal(err.headers.get('x-ratelimit-reset-requests'), '10ms');
    assert.equal(err.headers.get('x-ratelimit-limit-tokens'), '30000');
    assert.equal(err.headers.get('x-ratelimit-remaining-tokens'), '29000');
    assert.equal(err.headers.get('x-ratelimit-reset-tokens'), '2s');
    assert.equal(up.since(mark).length, 1);
});

test('upstream 429 is retried by the SDK: 3 attempts, then RateLimitError', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'e429-retry');
    const mark = up.mark();
    const err = await failure(gw.client(key).chat.completions.create({ model: 'fail-429', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.RateLimitError);
    assert.equal(up.since(mark).length, 3);
});

test('a 429 followed by success: the SDK retry succeeds transparently', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'flaky');
    const mark = up.mark();
    const r = await gw.client(key).chat.completions.create({ model: 'flaky-429', messages: msg(`flaky ${key.slice(-8)}`) });
    assert.equal(r.choices[0].message.content, `echo: flaky ${key.slice(-8)}`);
    assert.deepEqual(up.since(mark).map((x) => x.status), [429, 200]);
});

test('upstream 400 passed through: BadRequestError with param and code, not retried', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'e400');
    const mark = up.mark();
    const err = await failure(gw.client(key).chat.completions.create({ model: 'fail-400', messages: msg('x'), max_tokens: 5 }));
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.equal(err.param, 'max_tokens');
    assert.equal(err.code, 'unsupported_parameter');
    assertErrorObject(err);
    assert.equal(up.since(mark).length, 1);
});

test('unknown key -> 401 AuthenticationError invalid_api_key, nothing sent upstream', T, async () => {
    const { up, gw } = ctx;
    const mark = up.mark();
    const err = await failure(gw.client(newTollgateKey()).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    assert.equal(err.type, 'invalid_request_error');
    assertErrorObject(err);
    for (const bogus of ['placeholder-provider-key', 'tg' + '-short', 'not a key at all']) {
        const e2 = await failure(gw.client(bogus).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('x') }));
        assert.ok(e2 instanceof OpenAI.AuthenticationError, `${bogus}: ${e2}`);
        assert.equal(e2.code, 'invalid_api_key');
    }
    assert.equal(up.since(mark).length, 0);
});

test('missing key -> 401 with code null (raw fetch)', T, async () => {
    const { gw } = ctx;
    const r = await gw.rawFetch('/v1/chat/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: msg('x') }),
    });
    assert.equal(r.status, 401);
    assert.equal(r.json.error.code, null);
    assert.equal(r.json.error.type, 'invalid_request_error');
    assert.match(r.headers.get('x-request-id') ?? '', /^req_/);
});

test('model not allowed for the project, or unknown -> 404 NotFoundError model_not_found', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'e404');
    const mark = up.mark();
    for (const model of ['azure-4o', 'fail-500', 'gpt-4o']) {
        const err = await failure(gw.client(key).chat.completions.create({ model, messages: msg('x') }));
        assert.ok(err instanceof OpenAI.NotFoundError, `${model}: ${err}`);
        assert.equal(err.code, 'model_not_found');
        assert.ok(err.error.message.includes(model), 'the message names the model');
        assertErrorObject(err);
    }
    const e2 = await failure(gw.client(key).embeddings.create({ model: 'text-embedding-3-small', input: 'x' }));
    assert.ok(e2 instanceof OpenAI.NotFoundError);
    assert.equal(up.since(mark).length, 0);
});

test('invalid request bodies from the SDK -> 400 BadRequestError naming the param', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'e400-own');
    const c = gw.client(key);
    const mark = up.mark();
    const cases = [
        [{ model: 'gpt-4o-mini', messages: msg('x'), stream_options: { include_usage: true } }, 'stream_options'],
        [{ messages: msg('x') }, 'model'],
        [{ model: 'gpt-4o-mini', messages: 'not an array' }, 'messages'],
        [{ model: 42, messages: msg('x') }, 'model'],
        [{ model: 'gpt-4o-mini', messages: msg('x'), stream: 'yes' }, 'stream'],
    ];
    for (const [body, param] of cases) {
        const err = await failure(c.chat.completions.create(body));
        assert.ok(err instanceof OpenAI.BadRequestError, `${JSON.stringify(body)}: ${err}`);
        assert.equal(err.type, 'invalid_request_error');
        assert.equal(err.param, param, JSON.stringify(body));
        assertErrorObject(err);
    }
    assert.equal(up.since(mark).length, 0);
});

test('body too large -> 413 with an OpenAI error object (raw fetch)', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'e413');
    const mark = up.mark();
    const big = JSON.stringify({ model: 'gpt-4o-mini', messages: msg('x'.repeat(2 * 1024 * 1024)) });
    const r = await gw.rawFetch('/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: big,
    });
    assert.equal(r.status, 413);
    assert.equal(typeof r.json?.error?.message, 'string');
    assert.match(r.headers.get('x-request-id') ?? '', /^req_/);
    assert.equal(up.since(mark).length, 0);
    const ok = await gw.client(key).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('after 413') });
    assert.equal(ok.choices[0].message.content, 'echo: after 413');
});

test('upstream 200 with invalid JSON -> 502', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 'e502-json');
    const err = await failure(gw.client(key, { maxRetries: 0 }).chat.completions.create({ model: 'bad-json', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 502);
    assertErrorObject(err);
});

test('upstream cuts a non-stream body -> 502', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 'e502-cut');
    const err = await failure(gw.client(key, { maxRetries: 0 }).chat.completions.create({ model: 'cut-stream', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 502);
    assertErrorObject(err);
});

test('upstream unreachable -> 502', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 'e502-dead');
    const err = await failure(gw.client(key, { maxRetries: 0 }).chat.completions.create({ model: 'unreachable-model', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 502);
    assertErrorObject(err);
});

test('upstream first-byte timeout -> 504', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'e504');
    const mark = up.mark();
    const err = await failure(gw.client(key, { maxRetries: 0 }).chat.completions.create({ model: 'slow-first-byte', messages: msg('x') }));
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 504);
    assertErrorObject(err);
    const [rec] = up.since(mark);
    await rec.closed;
    assert.equal(rec.completed, false, 'the gateway gave up on the upstream before it answered');
});

test('a stream request that fails before the first byte gets an HTTP error, not SSE', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 'e500-stream');
    const err = await failure(
        gw.client(key, { maxRetries: 0 }).chat.completions.create({ model: 'fail-500', messages: msg('x'), stream: true }),
    );
    assert.ok(err instanceof OpenAI.InternalServerError, String(err));
    assert.equal(err.status, 500);
});

shutdownTest(ctx);
