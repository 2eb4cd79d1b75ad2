// batch.test.mjs: the Files and Batch APIs through the gateway with the official SDK: an
// upload reaches the provider with every line's model checked, a batch is created, retrieved,
// listed and cancelled; another project sees none of it (404, absent from its lists); a line
// naming a model the project may not use refuses the batch naming the line; and a completed
// batch is accounted once in the ledger, one row per line at half the standard price.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';
import { expectedCost } from './lib/gateway.mjs';
import { usageFor } from './lib/upstream.mjs';

const ctx = useGateway();

function line(customId, model, text) {
    return {
        custom_id: customId,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model, messages: [{ role: 'user', content: text }], max_tokens: 50 },
    };
}

function jsonl(lines) {
    return new File([lines.map((l) => JSON.stringify(l)).join('\n') + '\n'], 'batchinput.jsonl', {
        type: 'application/jsonl',
    });
}

async function otherProjectKey(gw, tag) {
    const r = await gw.adminFetch('/v1/organization/projects', {
        body: { name: `batch-other-${tag}-${Date.now()}`, models: ['gpt-4o-mini'] },
    });
    assert.equal(r.status, 200, r.text);
    return gw.createKey(r.json.id, 'batch-other');
}

async function status(p) {
    try {
        await p;
        return 200;
    } catch (e) {
        return e.status;
    }
}

test('files: upload reaches the provider as multipart, retrieve, content, list, delete', T, async () => {
    const { up, gw } = ctx;
    const client = gw.client(await gw.createKey('development', 'batch-files'));
    const mark = up.mark();
    const f = await client.files.create({
        file: jsonl([line('a', 'gpt-4o-mini', 'hello there'), line('b', 'gpt-4o-mini', 'two words')]),
        purpose: 'batch',
    });
    assert.equal(f.object, 'file');
    assert.equal(f.purpose, 'batch');
    assert.equal(f.filename, 'batchinput.jsonl');
    const sent = up.since(mark).find((r) => r.path === '/v1/files');
    assert.ok(sent && sent.file, 'the upload reached the provider');
    const lines = sent.file.content.toString().trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.custom_id, l.body.model]), [['a', 'gpt-4o-mini'], ['b', 'gpt-4o-mini']]);

    assert.equal((await client.files.retrieve(f.id)).id, f.id);
    const content = await (await client.files.content(f.id)).text();
    assert.equal(content.trim().split('\n').length, 2);
    const list = await client.files.list();
    assert.ok(list.data.some((x) => x.id === f.id));

    const del = await client.files.delete(f.id);
    assert.equal(del.deleted, true);
    assert.equal(await status(client.files.retrieve(f.id)), 404);
});

test('files: a purpose other than batch and a body that is not multipart are refused', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('development', 'batch-bad-upload');
    const client = gw.client(key);
    assert.equal(await status(client.files.create({ file: jsonl([line('a', 'gpt-4o-mini', 'x')]), purpose: 'fine-tune' })), 400);
    const r = await gw.rawFetch('/v1/files', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{}',
    });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.type, 'invalid_request_error');
});

test('batches: a line naming a model the project may not use refuses the batch, naming the line', T, async () => {
    const { up, gw } = ctx;
    const client = gw.client(await gw.createKey('development', 'batch-denied'));
    const f = await client.files.create({
        file: jsonl([line('a', 'gpt-4o-mini', 'ok'), line('b', 'gpt-4.1', 'not allowed here')]),
        purpose: 'batch',
    });
    const mark = up.mark();
    const err = await client.batches
        .create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' })
        .catch((e) => e);
    assert.equal(err.status, 400);
    assert.match(err.message, /Line 2/);
    assert.match(err.message, /gpt-4\.1/);
    assert.equal(up.since(mark).filter((r) => r.path === '/v1/batches').length, 0, 'nothing sent upstream');
});

test('batches: another project sees none of a project\'s files and batches', T, async () => {
    const { up, gw } = ctx;
    const mine = gw.client(await gw.createKey('development', 'batch-owner'));
    const theirs = gw.client(await otherProjectKey(gw, 'iso'));
    up.opts.holdBatches = true;
    try {
        const f = await mine.files.create({ file: jsonl([line('a', 'gpt-4o-mini', 'hi')]), purpose: 'batch' });
        const b = await mine.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
        assert.equal(b.object, 'batch');
        assert.equal(b.input_file_id, f.id);

        assert.equal(await status(theirs.files.retrieve(f.id)), 404);
        assert.equal(await status(theirs.files.content(f.id)), 404);
        assert.equal(await status(theirs.files.delete(f.id)), 404);
        assert.equal(await status(theirs.batches.retrieve(b.id)), 404);
        assert.equal(await status(theirs.batches.cancel(b.id)), 404);
        assert.equal(
            await status(theirs.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' })),
            404,
        );
        assert.ok(!(await theirs.files.list()).data.some((x) => x.id === f.id));
        assert.ok(!(await theirs.batches.list()).data.some((x) => x.id === b.id));

        const listed = await mine.batches.list();
        assert.ok(listed.data.some((x) => x.id === b.id));
        const c = await mine.batches.cancel(b.id);
        assert.equal(c.status, 'cancelled');
        assert.equal((await mine.files.retrieve(f.id)).id, f.id, 'still the owner\'s');
    } finally {
        up.opts.holdBatches = false;
    }
});

test('batches: a completed batch is accounted once, one ledger row per line at half price', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKeyObject('development', 'batch-account');
    const client = gw.client(key.value);
    const input = [line('r1', 'gpt-4o-mini', 'first question here'), line('r2', 'gpt-4o-mini', 'second')];
    const f = await client.files.create({ file: jsonl(input), purpose: 'batch' });
    const b = await client.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
    const done = await client.batches.retrieve(b.id);
    assert.equal(done.status, 'completed');
    assert.ok(done.output_file_id);
    const out = (await (await client.files.content(done.output_file_id)).text()).trim().split('\n');
    assert.equal(out.length, 2, 'the output file belongs to the batch\'s project');
    // The batch's cost counts against the key's month at once, as a live call's would.
    const spent = await gw.adminFetch(`/v1/organization/projects/development/api_keys/${key.id}/budget`);
    assert.equal(spent.status, 200, spent.text);
    const batchCost = input.reduce(
        (sum, l) => sum + Math.ceil(expectedCost('gpt-4o-mini', usageFor('chat.completions', l.body)) / 2),
        0,
    );
    assert.equal(spent.json.spend_micros, batchCost);

    const rows = await gw.waitLedger(b.id);
    // A second retrieve, then a marker request: once its row is in, the ledger has seen
    // everything the second retrieve could have added.
    assert.equal((await client.batches.retrieve(b.id)).status, 'completed');
    const { request_id } = await client.chat.completions
        .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'marker' }] })
        .withResponse();
    await gw.waitLedger(request_id);
    const all = (await gw.readLedger()).filter((r) => r.request_id === b.id);
    assert.equal(all.length, 2, JSON.stringify(all));
    assert.ok(rows.length >= 1);
    for (const l of input) {
        const u = usageFor('chat.completions', l.body);
        const row = all.find((r) => r.prompt_tokens === u.prompt_tokens);
        assert.ok(row, `a row for ${l.custom_id}`);
        assert.equal(row.endpoint, 'batch:/v1/chat/completions');
        assert.equal(row.model_requested, 'gpt-4o-mini');
        assert.equal(row.completion_tokens, u.completion_tokens);
        assert.equal(row.cached_tokens, u.cached_tokens);
        assert.equal(row.cost_micros, Math.ceil(expectedCost('gpt-4o-mini', u) / 2));
    }
});

test('batches: a key whose monthly budget is used up cannot start a batch (429 insufficient_quota)', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKeyObject('development', 'batch-broke');
    const client = gw.client(key.value, { maxRetries: 0 });
    const f = await client.files.create({ file: jsonl([line('r1', 'gpt-4o-mini', 'question')]), purpose: 'batch' });
    // One call spends more than a micro-dollar; then the key's budget becomes one micro-dollar.
    await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'spend it' }] });
    const set = await gw.adminFetch(`/v1/organization/projects/development/api_keys/${key.id}/budget`, {
        body: { monthly_limit: '0.000001' },
    });
    assert.equal(set.status, 200, set.text);
    const mark = up.mark();
    const err = await client.batches
        .create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' })
        .catch((e) => e);
    assert.equal(err.status, 429, String(err));
    assert.equal(err.code, 'insufficient_quota');
    assert.match(err.message, /key's monthly budget/);
    assert.equal(up.since(mark).filter((r) => r.path === '/v1/batches').length, 0, 'nothing sent upstream');
});

shutdownTest(ctx);
