// endpoints.test.mjs: every non-chat endpoint through tollgate with the official SDK:
// completions, embeddings (float, and base64 as the SDK sends by default), responses,
// moderations, Azure completions/embeddings, and the models list filtered by project.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';
import { DEV_MODELS, ALL_MODELS } from './lib/gateway.mjs';
import { embeddingFor, embeddingBase64 } from './lib/upstream.mjs';

const ctx = useGateway();

test('completions: text and usage from the upstream', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'cmpl');
    const mark = up.mark();
    const { data, request_id } = await gw.client(key).completions.create({ model: 'gpt-4o-mini', prompt: 'complete this' }).withResponse();
    assert.equal(data.object, 'text_completion');
    assert.equal(data.choices[0].text, 'echo: complete this');
    assert.equal(data.usage.prompt_tokens, 12);
    assert.equal(data.usage.completion_tokens, 5);
    assert.match(request_id, /^req_/);
    const [rec] = up.since(mark);
    assert.equal(rec.path, '/v1/completions');
    assert.equal(rec.body.prompt, 'complete this');
});

test('embeddings, SDK default (base64 on the wire): decoded vectors equal the upstream vectors', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'emb-b64');
    const mark = up.mark();
    const inputs = ['alpha', 'beta gamma', 'delta epsilon zeta'];
    const r = await gw.client(key).embeddings.create({ model: 'text-embedding-3-small', input: inputs });
    assert.equal(r.object, 'list');
    assert.equal(r.data.length, 3);
    inputs.forEach((x, i) => {
        assert.equal(r.data[i].index, i);
        assert.deepEqual(r.data[i].embedding, embeddingFor(x, i));
    });
    assert.deepEqual(r.usage, { prompt_tokens: 6, total_tokens: 6 });
    const [rec] = up.since(mark);
    assert.equal(rec.path, '/v1/embeddings');
    assert.equal(rec.body.encoding_format, 'base64');
    assert.deepEqual(rec.body.input, inputs);
});

test('embeddings base64 on the wire: the client gets the upstream base64 strings unchanged', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 'emb-raw');
    const r = await fetch(gw.v1 + '/embeddings', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'text-embedding-3-small', input: ['one', 'two'], encoding_format: 'base64', dimensions: 6 }),
    });
    assert.equal(r.status, 200);
    const j = await r.json();
    assert.equal(j.data[0].embedding, embeddingBase64(embeddingFor('one', 0, 6)));
    assert.equal(j.data[1].embedding, embeddingBase64(embeddingFor('two', 1, 6)));
});

test('embeddings float: vectors equal, upstream asked for float', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'emb-float');
    const mark = up.mark();
    const r = await gw.client(key).embeddings.create({
        model: 'text-embedding-3-small',
        input: 'float please',
        encoding_format: 'float',
        dimensions: 8,
    });
    assert.deepEqual(r.data[0].embedding, embeddingFor('float please', 0, 8));
    assert.equal(r.usage.prompt_tokens, 2);
    const [rec] = up.since(mark);
    assert.equal(rec.body.encoding_format, 'float');
    assert.equal(rec.body.dimensions, 8);
});

test('embeddings of token arrays', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('staging', 'emb-tokens');
    const r = await gw.client(key).embeddings.create({ model: 'text-embedding-3-small', input: [[1, 2, 3], [4, 5]] });
    assert.deepEqual(r.data[1].embedding, embeddingFor([4, 5], 1));
    assert.equal(r.usage.prompt_tokens, 5);
});

test('responses non-stream: output_text and top-level usage', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'resp');
    const mark = up.mark();
    const r = await gw.client(key).responses.create({
        model: 'gpt-4o-mini',
        instructions: 'be kind',
        input: [{ role: 'user', content: [{ type: 'input_text', text: 'tell me' }] }],
    });
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'completed');
    assert.equal(r.output_text, 'echo: tell me');
    assert.equal(r.usage.input_tokens, 14);
    assert.equal(r.usage.input_tokens_details.cached_tokens, 3);
    assert.equal(r.usage.output_tokens, 5);
    assert.equal(r.usage.output_tokens_details.reasoning_tokens, 2);
    const [rec] = up.since(mark);
    assert.equal(rec.path, '/v1/responses');
    assert.equal(rec.body.instructions, 'be kind');
});

test('moderations: results relayed', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'mod');
    const mark = up.mark();
    const r = await gw.client(key).moderations.create({ model: 'omni-moderation-latest', input: ['I will kill the process', 'hello'] });
    assert.equal(r.results.length, 2);
    assert.equal(r.results[0].flagged, true);
    assert.equal(r.results[0].categories.violence, true);
    assert.equal(r.results[1].flagged, false);
    assert.equal(up.since(mark)[0].path, '/v1/moderations');
});

test('Azure completions and embeddings use the deployment paths', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'az-endpoints');
    const c = gw.client(key);
    const mark = up.mark();
    const a = await c.completions.create({ model: 'azure-4o', prompt: 'azure text' });
    assert.equal(a.choices[0].text, 'echo: azure text');
    const e = await c.embeddings.create({ model: 'azure-4o', input: 'vec' });
    assert.deepEqual(e.data[0].embedding, embeddingFor('vec', 0));
    const recs = up.since(mark);
    assert.deepEqual(
        recs.map((r) => [r.path, r.query['api-version'], r.headers['api-key'] === ctx.azureKey]),
        [
            ['/openai/deployments/my-deployment/completions', '2024-10-21', true],
            ['/openai/deployments/my-deployment/embeddings', '2024-10-21', true],
        ],
    );
});

test('models list: only the models the key\'s project may use, never "*"', T, async () => {
    const { up, gw } = ctx;
    const dev = await gw.createKey('development', 'models-dev');
    const stg = await gw.createKey('staging', 'models-stg');
    const mark = up.mark();
    const devIds = [];
    for await (const m of gw.client(dev).models.list()) {
        assert.equal(m.object, 'model');
        assert.equal(typeof m.created, 'number');
        assert.equal(typeof m.owned_by, 'string');
        devIds.push(m.id);
    }
    assert.deepEqual(devIds.sort(), [...DEV_MODELS].sort());
    const stgIds = [];
    for await (const m of gw.client(stg).models.list()) stgIds.push(m.id);
    assert.deepEqual(stgIds.sort(), [...ALL_MODELS].sort());
    assert.equal(up.since(mark).length, 0, 'the models list is answered by tollgate');
});

test('models retrieve: allowed -> the model; not allowed or unknown -> 404', T, async () => {
    const { gw } = ctx;
    const dev = await gw.createKey('development', 'retrieve');
    const m = await gw.client(dev).models.retrieve('gpt-4o-mini');
    assert.equal(m.id, 'gpt-4o-mini');
    assert.equal(m.object, 'model');
    for (const id of ['azure-4o', 'no-such-model', '*']) {
        const err = await gw.client(dev, { maxRetries: 0 }).models.retrieve(id).catch((e) => e);
        assert.ok(err instanceof OpenAI.NotFoundError, `${id}: ${err}`);
        assert.equal(typeof err.error.message, 'string');
    }
    const stg = await gw.createKey('staging', 'retrieve-stg');
    assert.equal((await gw.client(stg).models.retrieve('azure-4o')).id, 'azure-4o');
});

shutdownTest(ctx);
