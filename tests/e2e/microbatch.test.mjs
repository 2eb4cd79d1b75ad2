// microbatch.test.mjs: embedding micro-batching through the real binary. A project turns
// "embedding_batching" on through the admin API; 20 concurrent SDK embeddings calls reach the
// scripted upstream as far fewer requests; each caller gets its own vectors in its own order
// (the ones the upstream made for its inputs), its usage share, and its own ledger row; the
// shares sum to the upstream's totals; an upstream error reaches every caller; callers with different encoding_format never share an
// upstream request; bad settings are refused with the member named.
//
// The scripted upstream's vector for an input also depends on the input's position in the
// request (lib/upstream.mjs: seed(input) + i), so a caller's vectors are compared with the
// ones the upstream computed for its inputs at the positions they had in the merged request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';
import { embeddingFor, embeddingBase64, usageFor } from './lib/upstream.mjs';

const ctx = useGateway();
const MODEL = 'text-embedding-3-small';

let seq = 0;
function unique(base) {
    seq += 1;
    return `${base}-${process.pid}-${seq}-${Date.now()}`;
}

async function batchedProject(gw, embedding_batching) {
    const r = await gw.adminFetch('/v1/organization/projects', { body: { name: unique('mb') } });
    assert.equal(r.status, 200, r.text);
    const p = r.json;
    const s = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { embedding_batching } });
    assert.equal(s.status, 200, s.text);
    assert.deepEqual(s.json.embedding_batching, embedding_batching);
    const key = await gw.createKey(p.id, 'mb');
    return { project: p, client: gw.client(key) };
}

// The upstream request holding input x, and x's position in it.
function whereUpstream(recs, x) {
    for (const rec of recs) {
        const inp = rec.body.input;
        const list = typeof inp === 'string' ? [inp] : inp;
        const k = list.findIndex((y) => y === x);
        if (k >= 0) return { rec, k };
    }
    return null;
}

test('20 concurrent callers: fewer upstream requests, own vectors, exact usage shares', T, async () => {
    const { up, gw } = ctx;
    const { client } = await batchedProject(gw, { enabled: true, window_ms: 40, max_inputs: 256 });
    const inputs = Array.from({ length: 20 }, (_, i) => {
        const words = Array.from({ length: 1 + (i % 5) }, (_, j) => `w${j}`).join(' ');
        return i % 4 === 3 ? [unique(`a ${words}`), unique(`b ${words}`)] : unique(words);
    });
    const mark = up.mark();
    const answers = await Promise.all(
        inputs.map((input) =>
            client.embeddings.create({ model: MODEL, input, encoding_format: 'float' }).withResponse(),
        ),
    );
    const recs = up.since(mark).filter((r) => r.endpoint === 'embeddings');
    assert.ok(recs.length <= 6, `the upstream saw ${recs.length} requests for 20 callers`);
    let upstreamPrompt = 0;
    for (const rec of recs) upstreamPrompt += usageFor('embeddings', rec.body).prompt_tokens;
    let callersPrompt = 0;
    answers.forEach(({ data }, i) => {
        const list = Array.isArray(inputs[i]) ? inputs[i] : [inputs[i]];
        assert.equal(data.data.length, list.length);
        assert.equal(data.model, MODEL);
        list.forEach((x, j) => {
            assert.equal(data.data[j].index, j, 're-indexed from 0 in the caller order');
            const at = whereUpstream(recs, x);
            assert.ok(at, `input ${x} went upstream`);
            assert.deepEqual(data.data[j].embedding, embeddingFor(x, at.k));
        });
        assert.equal(data.usage.total_tokens, data.usage.prompt_tokens);
        callersPrompt += data.usage.prompt_tokens;
    });
    assert.equal(callersPrompt, upstreamPrompt, 'the shares sum to the upstream totals');
    let ledgerPrompt = 0;
    let ledgerCost = 0;
    for (const { data, request_id } of answers) {
        const rows = await gw.waitLedger(request_id);
        const last = rows[rows.length - 1];
        assert.equal(last.status, 200);
        assert.equal(last.prompt_tokens, data.usage.prompt_tokens, 'the row carries its share');
        ledgerPrompt += last.prompt_tokens;
        ledgerCost += last.cost_micros;
    }
    assert.equal(ledgerPrompt, upstreamPrompt, 'the ledger rows sum to the upstream totals');
    assert.ok(ledgerCost > 0);
});

test('base64 and float callers are not merged together', T, async () => {
    const { up, gw } = ctx;
    const { client } = await batchedProject(gw, { enabled: true, window_ms: 40 });
    const mark = up.mark();
    const calls = Array.from({ length: 10 }, (_, i) => {
        const input = unique(`fmt ${i}`);
        const encoding_format = i % 2 ? 'base64' : 'float';
        return client.embeddings.create({ model: MODEL, input, encoding_format }).then((r) => ({ r, input }));
    });
    const done = await Promise.all(calls);
    const recs = up.since(mark).filter((r) => r.endpoint === 'embeddings');
    assert.ok(recs.length < 10, `batched: ${recs.length} upstream requests`);
    for (const rec of recs) {
        const fmts = new Set([rec.body.encoding_format ?? 'float']);
        assert.equal(fmts.size, 1);
    }
    const floats = recs.filter((r) => r.body.encoding_format !== 'base64');
    const b64 = recs.filter((r) => r.body.encoding_format === 'base64');
    assert.ok(floats.length >= 1 && b64.length >= 1);
    for (const { r, input } of done) {
        const at = whereUpstream(recs, input);
        assert.ok(at);
        const want = embeddingFor(input, at.k);
        const b64 = at.rec.body.encoding_format === 'base64';
        assert.deepEqual(r.data[0].embedding, b64 ? embeddingBase64(want) : want);
    }
});

test('an upstream error answers every caller of the batch with it', T, async () => {
    const { up, gw } = ctx;
    const { client } = await batchedProject(gw, { enabled: true, window_ms: 40 });
    const mark = up.mark();
    const results = await Promise.allSettled(
        Array.from({ length: 4 }, (_, i) => client.embeddings.create({ model: 'fail-400', input: unique(`err ${i}`) })),
    );
    const recs = up.since(mark).filter((r) => r.endpoint === 'embeddings');
    assert.ok(recs.length < 4, `batched: ${recs.length} upstream requests`);
    for (const r of results) {
        assert.equal(r.status, 'rejected');
        assert.equal(r.reason.status, 400);
        assert.equal(r.reason.param, 'max_tokens', 'the upstream error, as it came');
    }
    for (const r of results) {
        const rows = await gw.waitLedger(r.reason.requestID);
        assert.equal(rows[rows.length - 1].status, 400);
        assert.equal(rows[rows.length - 1].cost_micros, 0);
    }
});

test('a project without batching sends each call alone', T, async () => {
    const { up, gw } = ctx;
    const { client } = await batchedProject(gw, { enabled: false });
    const mark = up.mark();
    await Promise.all(
        Array.from({ length: 5 }, (_, i) => client.embeddings.create({ model: MODEL, input: unique(`solo ${i}`) })),
    );
    assert.equal(up.since(mark).filter((r) => r.endpoint === 'embeddings').length, 5);
});

test('bad embedding_batching settings are refused naming the member', T, async () => {
    const { gw } = ctx;
    const r = await gw.adminFetch('/v1/organization/projects', { body: { name: unique('mbbad') } });
    for (const bad of [{ window_ms: 0 }, { window_ms: 51 }, { max_inputs: 4096 }, { enabled: 'yes' }, { other: 1 }]) {
        const s = await gw.adminFetch(`/v1/organization/projects/${r.json.id}`, { body: { embedding_batching: bad } });
        assert.equal(s.status, 400, JSON.stringify(bad));
        assert.equal(s.json.error.param, 'embedding_batching');
    }
});

shutdownTest(ctx);
