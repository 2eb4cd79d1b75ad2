// cache.test.mjs: the response cache through the real binary: a project enables it through
// the admin API; a repeated request is answered from the cache (the upstream called once,
// `x-tollgate-cache: miss` then `hit`, the SDK sees the same content); a cached stream is
// replayed as a stream and a cached JSON answer served as a stream when asked; projects never
// share entries unless the operator lists them in cache.shared_projects; Cache-Control no-cache / no-store / max-age=N and x-tollgate-cache
// bypass / refresh steer each request; only successful answers are cached; a hit's ledger row
// has no upstream cost and records the cost it saved. The fs and db backends (their get and
// put on the thread pool) hit, are cleared by the admin invalidation and survive a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { startGateway } from './lib/gateway.mjs';

// Two projects the operator lets share one cache partition (created by name in the test).
const SHARED = [`shared-a-${process.pid}`, `shared-b-${process.pid}`];
const ctx = useGateway({ gateway: { extraYaml: `cache:\n  shared_projects: [${SHARED.join(', ')}]\n` } });

let seq = 0;
function unique(base) {
    seq += 1;
    return `${base}-${process.pid}-${seq}-${Date.now()}`;
}

// A fresh project with the cache enabled (memory backend) and a key in it.
async function cachedProject(gw, cache = { enabled: true }, name = unique('cache')) {
    const r = await gw.adminFetch('/v1/organization/projects', { body: { name } });
    assert.equal(r.status, 200, r.text);
    const p = r.json;
    const s = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { cache } });
    assert.equal(s.status, 200, s.text);
    const key = await gw.createKey(p.id, 'cache');
    return { project: p, key, client: gw.client(key) };
}

async function chat(client, body, headers) {
    const { data, response, request_id } = await client.chat.completions
        .create(body, headers ? { headers } : undefined)
        .withResponse();
    return { data, mark: response.headers.get('x-tollgate-cache'), request_id };
}

// A stream's chunks and the text they carry.
async function chatStream(client, body, headers) {
    const { data, response, request_id } = await client.chat.completions
        .create({ ...body, stream: true }, headers ? { headers } : undefined)
        .withResponse();
    const chunks = [];
    let text = '';
    let finish = null;
    let usage = null;
    for await (const c of data) {
        chunks.push(c);
        if (c.choices?.length) {
            text += c.choices[0].delta?.content ?? '';
            finish = c.choices[0].finish_reason ?? finish;
        }
        if (c.usage) usage = c.usage;
    }
    return { chunks, text, finish, usage, mark: response.headers.get('x-tollgate-cache'), request_id };
}

test('miss then hit: the upstream answers once, the SDK sees the same answer', T, async () => {
    const { up, gw } = ctx;
    const { client } = await cachedProject(gw);
    const body = { model: 'gpt-4o-mini', messages: msg(unique('remember me')) };
    const mark = up.mark();
    const first = await chat(client, body);
    assert.equal(first.mark, 'miss');
    const second = await chat(client, body);
    assert.equal(second.mark, 'hit');
    assert.equal(up.since(mark).length, 1, 'the upstream was called once');
    assert.deepEqual(second.data, first.data, 'the replay equals the original');
    assert.notEqual(second.request_id, first.request_id, 'each request keeps its own id');
    // Members that do not change the output (user) share the entry.
    const third = await chat(client, { ...body, user: 'someone' });
    assert.equal(third.mark, 'hit');
    // A parameter that changes the output is another entry.
    const other = await chat(client, { ...body, temperature: 0.5 });
    assert.equal(other.mark, 'miss');
    assert.equal(up.since(mark).length, 2);
});

test('a hit is in the ledger with no upstream cost and the cost it saved', T, async () => {
    const { gw } = ctx;
    const { client } = await cachedProject(gw);
    const body = { model: 'gpt-4o-mini', messages: msg(unique('price me')) };
    const first = await chat(client, body);
    const second = await chat(client, body);
    assert.equal(second.mark, 'hit');
    const [orig] = await gw.waitLedger(first.request_id);
    const [hit] = await gw.waitLedger(second.request_id);
    assert.ok(orig.cost_micros > 0, 'the original answer cost something');
    assert.equal(orig.provider, 'up');
    assert.equal(Number(orig.saved_micros), 0);
    assert.equal(hit.provider, 'cache');
    assert.equal(hit.cost_micros, 0);
    assert.equal(hit.prompt_tokens + hit.completion_tokens, 0, 'no upstream tokens');
    assert.equal(Number(hit.saved_micros), orig.cost_micros, 'the saving is the original cost');
    assert.equal(hit.status, 200);
});

test('a cached stream is replayed as a stream', T, async () => {
    const { up, gw } = ctx;
    const { client } = await cachedProject(gw);
    const body = { model: 'gpt-4o-mini', messages: msg(unique('stream me please')), stream_options: { include_usage: true } };
    const mark = up.mark();
    const first = await chatStream(client, body);
    assert.equal(first.mark, 'miss');
    const second = await chatStream(client, body);
    assert.equal(second.mark, 'hit');
    assert.equal(up.since(mark).length, 1);
    assert.ok(first.chunks.length > 2);
    assert.deepEqual(second.chunks, first.chunks, 'chunk for chunk, as the SDK sees them');
    assert.equal(second.text, first.text);
    assert.equal(second.finish, 'stop');
    assert.deepEqual(second.usage, first.usage);
    // A JSON request cannot be answered from a stream: it goes upstream.
    const { stream_options, ...plain } = body;
    const json = await chat(client, plain);
    assert.equal(json.mark, 'miss');
    assert.equal(json.data.choices[0].message.content, first.text);
    assert.equal(up.since(mark).length, 2);
});

test('a cached JSON answer is served as a stream when asked', T, async () => {
    const { up, gw } = ctx;
    const { client } = await cachedProject(gw);
    const body = { model: 'gpt-4o-mini', messages: msg(unique('json then stream')) };
    const mark = up.mark();
    const first = await chat(client, body);
    assert.equal(first.mark, 'miss');
    const streamed = await chatStream(client, { ...body, stream_options: { include_usage: true } });
    assert.equal(streamed.mark, 'hit');
    assert.equal(up.since(mark).length, 1);
    assert.equal(streamed.text, first.data.choices[0].message.content);
    assert.equal(streamed.finish, first.data.choices[0].finish_reason);
    assert.equal(streamed.chunks[0].id, first.data.id);
    assert.equal(streamed.chunks[0].model, first.data.model);
    assert.equal(streamed.usage.prompt_tokens, first.data.usage.prompt_tokens);
    assert.equal(streamed.usage.completion_tokens, first.data.usage.completion_tokens);
});

test('partitioned per project: another project misses', T, async () => {
    const { up, gw } = ctx;
    const a = await cachedProject(gw);
    const b = await cachedProject(gw);
    const body = { model: 'gpt-4o-mini', messages: msg(unique('mine only')) };
    const mark = up.mark();
    assert.equal((await chat(a.client, body)).mark, 'miss');
    assert.equal((await chat(b.client, body)).mark, 'miss');
    assert.equal((await chat(a.client, body)).mark, 'hit');
    assert.equal((await chat(b.client, body)).mark, 'hit');
    assert.equal(up.since(mark).length, 2);
    // A project without the cache has no mark and always goes upstream.
    const off = gw.client(await gw.createKey('staging', 'no-cache'));
    const r1 = await chat(off, body);
    const r2 = await chat(off, body);
    assert.equal(r1.mark, null);
    assert.equal(r2.mark, null);
    assert.equal(up.since(mark).length, 4);
});

test('cache.shared_projects: the listed projects share entries, the others keep their own', T, async () => {
    const { up, gw } = ctx;
    const a = await cachedProject(gw, { enabled: true }, SHARED[0]);
    const b = await cachedProject(gw, { enabled: true }, SHARED[1]);
    const c = await cachedProject(gw);
    const body = { model: 'gpt-4o-mini', messages: msg(unique('shared answer')) };
    const mark = up.mark();
    const first = await chat(a.client, body);
    assert.equal(first.mark, 'miss');
    // b is listed too: a's answer serves it, without going upstream.
    const second = await chat(b.client, body);
    assert.equal(second.mark, 'hit');
    assert.equal(second.data.choices[0].message.content, first.data.choices[0].message.content);
    assert.equal(up.since(mark).length, 1);
    // c is not listed: its own partition misses.
    assert.equal((await chat(c.client, body)).mark, 'miss');
    assert.equal(up.since(mark).length, 2);
});

test('Cache-Control no-cache, no-store, max-age and x-tollgate-cache bypass, refresh', T, async () => {
    const { up, gw } = ctx;
    const { client } = await cachedProject(gw);

    // no-store: answered upstream and not kept.
    const b1 = { model: 'gpt-4o-mini', messages: msg(unique('not kept')) };
    let mark = up.mark();
    assert.equal((await chat(client, b1, { 'cache-control': 'no-store' })).mark, 'miss');
    assert.equal((await chat(client, b1)).mark, 'miss');
    assert.equal((await chat(client, b1)).mark, 'hit');
    assert.equal(up.since(mark).length, 2);

    // bypass: neither looked up nor kept.
    const b2 = { model: 'gpt-4o-mini', messages: msg(unique('bypassed')) };
    mark = up.mark();
    assert.equal((await chat(client, b2, { 'x-tollgate-cache': 'bypass' })).mark, 'miss');
    assert.equal((await chat(client, b2)).mark, 'miss');
    assert.equal((await chat(client, b2, { 'x-tollgate-cache': 'bypass' })).mark, 'miss');
    assert.equal(up.since(mark).length, 3);

    // no-cache and refresh: not looked up, but the fresh answer replaces the entry.
    const b3 = { model: 'gpt-4o-mini', messages: msg(unique('refreshed')), user: 'behaviour:normal' };
    mark = up.mark();
    const orig = await chat(client, b3);
    assert.equal(orig.mark, 'miss');
    const nc = await chat(client, b3, { 'cache-control': 'no-cache' });
    assert.equal(nc.mark, 'miss');
    assert.equal(up.since(mark).length, 2);
    const afterNc = await chat(client, b3);
    assert.equal(afterNc.mark, 'hit');
    assert.deepEqual(afterNc.data, nc.data, 'no-cache stored its answer');
    const rf = await chat(client, b3, { 'x-tollgate-cache': 'refresh' });
    assert.equal(rf.mark, 'miss');
    assert.equal(up.since(mark).length, 3);
    const afterRf = await chat(client, b3);
    assert.equal(afterRf.mark, 'hit');
    assert.deepEqual(afterRf.data, rf.data, 'refresh stored its answer');

    // max-age: a young enough entry is served, an older one is not.
    mark = up.mark();
    assert.equal((await chat(client, b3, { 'cache-control': 'max-age=3600' })).mark, 'hit');
    assert.equal(up.since(mark).length, 0);
    // The entry is at least a millisecond old by the time the next request arrives.
    await new Promise((r) => setTimeout(r, 5));
    assert.equal((await chat(client, b3, { 'cache-control': 'max-age=0' })).mark, 'miss');
    assert.equal(up.since(mark).length, 1);
});

test('only successful answers are cached', T, async () => {
    const { up, gw } = ctx;
    const { client } = await cachedProject(gw);
    const body = { model: 'fail-400', messages: msg(unique('refused')) };
    const mark = up.mark();
    for (let i = 0; i < 2; i++) {
        const err = await client.chat.completions.create(body).catch((e) => e);
        assert.equal(err.status, 400);
    }
    assert.equal(up.since(mark).length, 2, 'an error answer is never served from the cache');
    // A cut stream is not kept either.
    const cut = { model: 'cut-stream', messages: msg(unique('cut')) };
    const mark2 = up.mark();
    for (let i = 0; i < 2; i++) {
        const s = await client.chat.completions.create({ ...cut, stream: true });
        await (async () => {
            for await (const _ of s);
        })().catch(() => {});
    }
    assert.ok(up.since(mark2).length >= 2, 'a cut stream is never served from the cache');
});

test('cache settings are validated', T, async () => {
    const { gw } = ctx;
    const r = await gw.adminFetch('/v1/organization/projects', { body: { name: unique('badcache') } });
    const bad = await gw.adminFetch(`/v1/organization/projects/${r.json.id}`, { body: { cache: { enabled: true, ttl_s: -1 } } });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.json.error.param, 'cache');
});

test('admin: settings and stats, invalidation by project, model, age and all (audited)', T, async () => {
    const { up, gw } = ctx;
    const a = await cachedProject(gw, { enabled: true, ttl_s: 600 });
    const b = await cachedProject(gw);
    const got = await gw.adminFetch(`/v1/organization/projects/${a.project.id}/cache`);
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.object, 'project.cache');
    assert.deepEqual(got.json.settings, { enabled: true, backend: 'memory', ttl_s: 600 });
    for (const k of ['hits', 'misses', 'puts', 'evictions', 'entries', 'bytes', 'max_bytes']) {
        assert.equal(typeof got.json.stats[k], 'number', k);
    }

    const mini = { model: 'gpt-4o-mini', messages: msg(unique('invalidate me')) };
    const small = { model: 'mock-small', messages: msg(unique('keep me')) };
    await chat(a.client, mini);
    await chat(a.client, small);
    await chat(b.client, mini);
    const hitsBefore = got.json.stats.hits;
    assert.equal((await chat(a.client, mini)).mark, 'hit');
    const after = await gw.adminFetch(`/v1/organization/projects/${a.project.id}/cache`);
    assert.ok(after.json.stats.hits > hitsBefore, 'the hit is counted');
    assert.ok(after.json.stats.entries >= 3);

    // By project and model: a's gpt-4o-mini entry goes; a's mock-small and b's stay.
    const inv = await gw.adminFetch('/v1/organization/cache/invalidate', { body: { project_id: a.project.id, model: 'gpt-4o-mini' } });
    assert.equal(inv.status, 200, inv.text);
    assert.equal(inv.json.object, 'cache.invalidation');
    assert.equal(inv.json.removed, 1);
    assert.equal(inv.json.project_id, a.project.id);
    let mark = up.mark();
    assert.equal((await chat(a.client, mini)).mark, 'miss');
    assert.equal((await chat(a.client, small)).mark, 'hit');
    assert.equal((await chat(b.client, mini)).mark, 'hit');
    assert.equal(up.since(mark).length, 1);

    // By age: nothing is a day old yet.
    const day = await gw.adminFetch('/v1/organization/cache/invalidate', { body: { project_id: b.project.id, older_than_s: 86400 } });
    assert.equal(day.status, 200, day.text);
    assert.equal(day.json.removed, 0);
    assert.equal((await chat(b.client, mini)).mark, 'hit');

    // A whole project, by name.
    const byName = await gw.adminFetch('/v1/organization/cache/invalidate', { body: { project_id: b.project.name } });
    assert.equal(byName.status, 200, byName.text);
    assert.equal(byName.json.removed, 1);
    assert.equal((await chat(b.client, mini)).mark, 'miss');

    // Everything.
    const all = await gw.adminFetch('/v1/organization/cache/invalidate', { body: { all: true } });
    assert.equal(all.status, 200, all.text);
    assert.ok(all.json.removed >= 3);
    mark = up.mark();
    assert.equal((await chat(a.client, small)).mark, 'miss');
    assert.equal((await chat(a.client, mini)).mark, 'miss');
    assert.equal(up.since(mark).length, 1, 'gpt-4o-mini went upstream again (mock-small never does)');

    // Bad input names the member; nothing to select is refused; an unknown project is a 404.
    for (const [body, param] of [
        [{ older_than_s: 0 }, 'older_than_s'],
        [{ all: 'yes' }, 'all'],
        [{ model: 7 }, 'model'],
        [{ nope: 1 }, null],
    ]) {
        const r = await gw.adminFetch('/v1/organization/cache/invalidate', { body });
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        if (param) assert.equal(r.json.error.param, param);
    }
    assert.equal((await gw.adminFetch('/v1/organization/cache/invalidate', { body: {} })).status, 400);
    assert.equal((await gw.adminFetch('/v1/organization/cache/invalidate', { body: { project_id: 'proj_nope' } })).status, 404);

    // Audited.
    const log = await gw.adminFetch('/v1/organization/audit_logs?event_types=cache.invalidated&limit=100');
    assert.equal(log.status, 200, log.text);
    assert.ok(log.json.data.length >= 4, log.text.slice(0, 300));
});

test('admin: a reader invalidates only a project they are a member of', T, async () => {
    const { gw } = ctx;
    const a = await cachedProject(gw);
    const inv = await gw.adminFetch('/v1/organization/invites', {
        body: { email: `${unique('reader')}@example.com`, role: 'reader', projects: [{ id: a.project.id, role: 'member' }] },
    });
    assert.equal(inv.status, 200, inv.text);
    const acc = await gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.json.token } });
    assert.equal(acc.status, 200, acc.text);
    const reader = acc.json.admin_api_key.value;
    gw.clientKeys.push(reader);
    const body = { model: 'gpt-4o-mini', messages: msg(unique('reader')) };
    await chat(a.client, body);
    const own = await gw.adminFetch('/v1/organization/cache/invalidate', { key: reader, body: { project_id: a.project.id } });
    assert.equal(own.status, 200, own.text);
    assert.equal(own.json.removed, 1);
    const other = await gw.adminFetch('/v1/organization/cache/invalidate', { key: reader, body: { project_id: 'staging' } });
    assert.equal(other.status, 403, other.text);
    assert.equal(other.json.error.code, 'not_a_project_member');
    const everything = await gw.adminFetch('/v1/organization/cache/invalidate', { key: reader, body: { all: true } });
    assert.equal(everything.status, 403, everything.text);
    const noProject = await gw.adminFetch('/v1/organization/cache/invalidate', { key: reader, body: { model: 'gpt-4o-mini' } });
    assert.equal(noProject.status, 403, noProject.text);
    const stats = await gw.adminFetch(`/v1/organization/projects/${a.project.id}/cache`, { key: reader });
    assert.equal(stats.status, 200, stats.text);
});

// Runs `tollgate ARGS` against the gateway; never throws on a non-zero exit.
async function tg(args) {
    const env = { ...process.env, TOLLGATE_URL: ctx.gw.url, TOLLGATE_ADMIN_KEY: ctx.gw.adminKey };
    try {
        const { stdout, stderr } = await promisify(execFile)(process.env.TOLLGATE_BIN, args, { env });
        return { code: 0, stdout, stderr };
    } catch (e) {
        if (typeof e.code !== 'number') throw e;
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
}

test('CLI: tollgate cache get and cache invalidate', T, async () => {
    const { gw } = ctx;
    const a = await cachedProject(gw, { enabled: true, ttl_s: 120 });
    const body = { model: 'gpt-4o-mini', messages: msg(unique('cli')) };
    await chat(a.client, body);
    const get = await tg(['cache', 'get', '--project', a.project.name]);
    assert.equal(get.code, 0, get.stderr);
    assert.match(get.stdout, /enabled\s+yes/);
    assert.match(get.stdout, /ttl\s+120 s/);
    const js = await tg(['--json', 'cache', 'get', '--project', a.project.id]);
    assert.equal(JSON.parse(js.stdout).settings.ttl_s, 120);
    const none = await tg(['cache', 'invalidate']);
    assert.equal(none.code, 2, 'nothing to select is a usage error');
    const bad = await tg(['cache', 'invalidate', '--older-than', 'soon']);
    assert.equal(bad.code, 2);
    const inv = await tg(['cache', 'invalidate', '--project', a.project.name, '--model', 'gpt-4o-mini']);
    assert.equal(inv.code, 0, inv.stderr);
    assert.match(inv.stdout, /Removed 1 cached answer\./);
    assert.equal((await chat(a.client, body)).mark, 'miss');
});

// The fs and db backends store on the thread pool after the answer is sent: wait (bounded)
// until the project's backend counted the put before asking again.
async function waitPuts(gw, projectId, atLeast) {
    const deadline = Date.now() + 10000;
    for (;;) {
        const r = await gw.adminFetch(`/v1/organization/projects/${projectId}/cache`);
        assert.equal(r.status, 200, r.text);
        if (r.json.stats.puts >= atLeast) return r.json.stats;
        assert.ok(Date.now() < deadline, `the cache counted ${r.json.stats.puts} puts, expected ${atLeast}`);
        await new Promise((res) => setTimeout(res, 20));
    }
}

async function entriesOf(gw, projectId) {
    const r = await gw.adminFetch(`/v1/organization/projects/${projectId}/cache`);
    assert.equal(r.status, 200, r.text);
    return r.json.stats.entries;
}

for (const backend of ['fs', 'db']) {
    test(`backend ${backend}: miss then hit (JSON and stream), invalidation through the admin route clears it`, T, async () => {
        const { up, gw } = ctx;
        const { project, client } = await cachedProject(gw, { enabled: true, backend });
        const got = await gw.adminFetch(`/v1/organization/projects/${project.id}/cache`);
        assert.equal(got.json.settings.backend, backend);
        assert.equal(got.json.stats.backend, backend);
        const puts0 = got.json.stats.puts;
        const body = { model: 'gpt-4o-mini', messages: msg(unique(`on ${backend}`)) };
        const mark = up.mark();
        const first = await chat(client, body);
        assert.equal(first.mark, 'miss');
        await waitPuts(gw, project.id, puts0 + 1);
        const second = await chat(client, body);
        assert.equal(second.mark, 'hit');
        assert.deepEqual(second.data, first.data, 'the replay equals the original');
        assert.equal(up.since(mark).length, 1, 'the upstream was called once');
        // A cached JSON answer served as a stream.
        const streamed = await chatStream(client, body);
        assert.equal(streamed.mark, 'hit');
        assert.equal(streamed.text, first.data.choices[0].message.content);
        // A cached stream replayed as a stream.
        const sbody = { model: 'gpt-4o-mini', messages: msg(unique(`stream on ${backend}`)) };
        const s1 = await chatStream(client, sbody);
        assert.equal(s1.mark, 'miss');
        await waitPuts(gw, project.id, puts0 + 2);
        const s2 = await chatStream(client, sbody);
        assert.equal(s2.mark, 'hit');
        assert.deepEqual(s2.chunks, s1.chunks);
        assert.equal(up.since(mark).length, 2);
        assert.ok((await entriesOf(gw, project.id)) >= 2);

        const inv = await gw.adminFetch('/v1/organization/cache/invalidate', { body: { project_id: project.id } });
        assert.equal(inv.status, 200, inv.text);
        assert.equal(inv.json.removed, 2, 'both entries of the project removed');
        assert.equal((await chat(client, body)).mark, 'miss');
        assert.equal(up.since(mark).length, 3);
    });
}

test('backends fs and db: entries survive a restart on the same data directory', T, async () => {
    const { up, upstreamKey, azureKey } = ctx;
    const gws = [await startGateway({ upstream: up, upstreamKey, azureKey })];
    try {
        const first = gws[0];
        const made = [];
        for (const backend of ['fs', 'db']) {
            const p = await cachedProject(first, { enabled: true, backend });
            const body = { model: 'gpt-4o-mini', messages: msg(unique(`kept on ${backend}`)) };
            const r = await chat(p.client, body);
            assert.equal(r.mark, 'miss');
            await waitPuts(first, p.project.id, 1);
            made.push({ ...p, body, data: r.data });
        }
        await first.stopAndCheck();

        gws.push(await startGateway({ upstream: up, upstreamKey, azureKey, dataDir: first.dataDir, adminKey: first.adminKey }));
        const second = gws[1];
        const mark = up.mark();
        for (const m of made) {
            second.clientKeys.push(m.key);
            const r = await chat(second.client(m.key), m.body);
            assert.equal(r.mark, 'hit', `a ${m.project.name} entry survived the restart`);
            assert.deepEqual(r.data, m.data);
        }
        assert.equal(up.since(mark).length, 0, 'no upstream call after the restart');
        await second.stopAndCheck();
    } finally {
        for (const g of gws) {
            if (!g.exit) {
                g.kill();
                await g.exited;
            }
        }
        for (const g of gws) if (g.cleanupOk) g.cleanup();
    }
});

shutdownTest(ctx);
