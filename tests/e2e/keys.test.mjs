// keys.test.mjs: the admin API for projects and project keys (OpenAI Admin API shapes), what
// each kind of key may do, revocation taking effect at once, and the generated admin key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { startGateway, SLOW } from './lib/gateway.mjs';

const ctx = useGateway();
const KEY_RE = /^tg-[A-Za-z0-9_-]{43}$/;

test('projects: the three default environments, by id and by name', T, async () => {
    const { gw } = ctx;
    const r = await gw.adminFetch('/v1/organization/projects');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    const names = r.json.data.map((p) => p.name);
    for (const n of ['development', 'staging', 'production']) assert.ok(names.includes(n), n);
    for (const p of r.json.data) {
        assert.match(p.id, /^proj_/);
        assert.equal(p.object, 'organization.project');
        assert.equal(typeof p.created_at, 'number');
        assert.equal(p.archived_at, null);
        assert.equal(p.status, 'active');
    }
    assert.equal(r.json.first_id, r.json.data[0].id);
    assert.equal(r.json.last_id, r.json.data.at(-1).id);
    assert.equal(typeof r.json.has_more, 'boolean');
    const dev = r.json.data.find((p) => p.name === 'development');
    const byId = await gw.adminFetch(`/v1/organization/projects/${dev.id}`);
    const byName = await gw.adminFetch('/v1/organization/projects/development');
    assert.deepEqual(byId.json, dev);
    assert.deepEqual(byName.json, dev);
    const missing = await gw.adminFetch('/v1/organization/projects/proj_doesnotexist');
    assert.equal(missing.status, 404);
    assert.equal(typeof missing.json.error.message, 'string');
});

test('create a key: shape, value shown once, and it works for inference', T, async () => {
    const { gw } = ctx;
    const k = await gw.createKeyObject('development', 'ci');
    assert.equal(k.object, 'organization.project.api_key');
    assert.match(k.id, /^key_/);
    assert.equal(k.name, 'ci');
    assert.match(k.value, KEY_RE);
    assert.equal(typeof k.redacted_value, 'string');
    assert.notEqual(k.redacted_value, k.value);
    assert.ok(k.redacted_value.startsWith('tg-'));
    assert.ok(k.redacted_value.length < k.value.length);
    assert.equal(typeof k.created_at, 'number');
    assert.equal(k.last_used_at, null);
    assert.match(k.project_id, /^proj_/);
    const r = await gw.client(k.value).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('new key') });
    assert.equal(r.choices[0].message.content, 'echo: new key');
});

test('list and retrieve show the redacted value only', T, async () => {
    const { gw } = ctx;
    const k = await gw.createKeyObject('staging', 'listed');
    const list = await gw.adminFetch('/v1/organization/projects/staging/api_keys?limit=100');
    assert.equal(list.status, 200, list.text);
    assert.equal(list.json.object, 'list');
    assert.ok(!list.text.includes(k.value), 'the key value never appears in a list');
    const item = list.json.data.find((x) => x.id === k.id);
    assert.ok(item, 'the new key is listed');
    assert.equal(item.value, undefined);
    assert.equal(item.redacted_value, k.redacted_value);
    assert.equal(item.status, 'active');
    assert.equal(item.object, 'organization.project.api_key');
    for (const x of list.json.data) assert.equal(x.value, undefined);
    const one = await gw.adminFetch(`/v1/organization/projects/staging/api_keys/${k.id}`);
    assert.equal(one.status, 200);
    assert.equal(one.json.id, k.id);
    assert.equal(one.json.value, undefined);
    assert.ok(!one.text.includes(k.value));
    const missing = await gw.adminFetch('/v1/organization/projects/staging/api_keys/key_doesnotexist');
    assert.equal(missing.status, 404);
    assert.equal(typeof missing.json.error.message, 'string');
});

test('list pagination with limit and after', T, async () => {
    const { gw } = ctx;
    for (let i = 0; i < 3; i++) await gw.createKeyObject('production', `page-${i}`);
    const seen = [];
    let after = null;
    for (let guard = 0; guard < 50; guard++) {
        const q = `limit=2${after ? `&after=${after}` : ''}`;
        const r = await gw.adminFetch(`/v1/organization/projects/production/api_keys?${q}`);
        assert.equal(r.status, 200, r.text);
        assert.ok(r.json.data.length <= 2);
        seen.push(...r.json.data.map((x) => x.id));
        if (!r.json.has_more) break;
        assert.equal(r.json.last_id, r.json.data.at(-1).id);
        after = r.json.last_id;
    }
    assert.ok(seen.length >= 3);
    assert.equal(new Set(seen).size, seen.length, 'no key twice');
});

test('revoke: the key fails with 401 at once, on every worker', T, async () => {
    const { gw } = ctx;
    const k = await gw.createKeyObject('development', 'to-revoke');
    const c = gw.client(k.value, { maxRetries: 0 });
    await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('before') });
    const d = await gw.adminFetch(`/v1/organization/projects/development/api_keys/${k.id}`, { method: 'DELETE' });
    assert.equal(d.status, 200, d.text);
    assert.deepEqual(d.json, { object: 'organization.project.api_key.deleted', id: k.id, deleted: true });
    for (let i = 0; i < 6; i++) {
        // fresh connections, so different workers answer
        const fresh = gw.client(k.value, { maxRetries: 0, defaultHeaders: { connection: 'close' } });
        const err = await fresh.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('after') }).catch((e) => e);
        assert.ok(err instanceof OpenAI.AuthenticationError, `attempt ${i}: ${err}`);
        assert.equal(err.code, 'invalid_api_key');
    }
    const list = await gw.adminFetch('/v1/organization/projects/development/api_keys?limit=100');
    assert.equal(list.json.data.find((x) => x.id === k.id)?.status, 'revoked');
});

test('the admin key cannot do inference (403)', T, async () => {
    const { up, gw } = ctx;
    const mark = up.mark();
    const err = await gw
        .client(gw.adminKey, { maxRetries: 0 })
        .chat.completions.create({ model: 'gpt-4o-mini', messages: msg('x') })
        .catch((e) => e);
    assert.ok(err instanceof OpenAI.PermissionDeniedError, String(err));
    assert.equal(err.status, 403);
    assert.equal(typeof err.error.message, 'string');
    assert.equal(up.since(mark).length, 0);
});

test('OpenAI-Project must name the key\'s own project (id or name), else 401', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('staging', 'project-header');
    const projects = (await gw.adminFetch('/v1/organization/projects')).json.data;
    const staging = projects.find((p) => p.name === 'staging');
    const production = projects.find((p) => p.name === 'production');
    for (const good of [staging.id, 'staging']) {
        const c = gw.client(key, { defaultHeaders: { 'OpenAI-Project': good } });
        const r = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('mine') });
        assert.equal(r.object, 'chat.completion');
    }
    const mark = up.mark();
    for (const bad of [production.id, 'production', 'proj_doesnotexist']) {
        const err = await gw
            .client(key, { maxRetries: 0, defaultHeaders: { 'OpenAI-Project': bad } })
            .chat.completions.create({ model: 'gpt-4o-mini', messages: msg('theirs') })
            .catch((e) => e);
        assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
        assert.equal(err.code, 'mismatched_project');
    }
    assert.equal(up.since(mark).length, 0);
});

test('a project key cannot use the admin API (403); no key is 401', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('production', 'not-admin');
    for (const [method, p] of [
        ['GET', '/v1/organization/projects'],
        ['GET', '/v1/organization/projects/production/api_keys'],
        ['POST', '/v1/organization/projects/production/api_keys'],
    ]) {
        const r = await gw.adminFetch(p, { method, key, body: method === 'POST' ? { name: 'x' } : undefined });
        assert.equal(r.status, 403, `${method} ${p}: ${r.text}`);
        assert.equal(typeof r.json.error.message, 'string');
    }
    const none = await gw.adminFetch('/v1/organization/projects', { key: null });
    assert.equal(none.status, 401);
});

test('generated admin key: DATA_DIR/admin.key mode 0600, logged by path, never by value', { timeout: 90000 * SLOW }, async () => {
    const gw2 = await startGateway({ upstream: ctx.up, upstreamKey: ctx.upstreamKey, azureKey: ctx.azureKey, adminKey: null });
    try {
        const f = path.join(gw2.dataDir, 'admin.key');
        assert.ok(fs.existsSync(f), 'admin.key written');
        assert.equal(fs.statSync(f).mode & 0o777, 0o600);
        const value = fs.readFileSync(f, 'utf8').trim();
        assert.match(value, KEY_RE);
        assert.equal(gw2.adminKey, value);
        assert.ok(gw2.logs().includes(f) || gw2.logs().includes('admin.key'), 'the log names the file');
        const r = await gw2.adminFetch('/v1/organization/projects');
        assert.equal(r.status, 200);
    } finally {
        await gw2.stopAndCheck();
    }
    assert.ok(!gw2.logs().includes(gw2.adminKey));
    gw2.cleanup();
});

shutdownTest(ctx);
