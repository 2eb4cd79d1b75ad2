// projects.test.mjs: projects as environments through the admin API: create, rename, archive,
// the environment label, the allowed-model setting taking effect at once, isolation between
// projects, service accounts and their keys, project members, and bad input answered with
// OpenAI errors and nothing half-applied.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';

const ctx = useGateway();
const KEY_RE = /^tg-[A-Za-z0-9_-]{43}$/;

let seq = 0;
function uniqueName(base) {
    seq += 1;
    return `${base}-${process.pid}-${seq}`;
}

async function createProject(gw, body) {
    const r = await gw.adminFetch('/v1/organization/projects', { body });
    assert.equal(r.status, 200, r.text);
    return r.json;
}

async function listProjects(gw, query = '') {
    const r = await gw.adminFetch(`/v1/organization/projects?limit=100${query}`);
    assert.equal(r.status, 200, r.text);
    return r.json.data;
}

function assertError(r, status, what) {
    assert.equal(r.status, status, `${what}: ${r.text}`);
    assert.ok(r.json && r.json.error, `${what}: an OpenAI error object`);
    assert.equal(typeof r.json.error.message, 'string', what);
    assert.ok(r.json.error.message.length > 0, what);
    assert.equal(r.json.error.type, 'invalid_request_error', what);
}

async function modelIds(gw, key) {
    const r = await gw.rawFetch('/v1/models', { headers: { authorization: `Bearer ${key}` } });
    assert.equal(r.status, 200, r.text);
    return r.json.data.map((m) => m.id).sort();
}

test('create: shape, default environment, custom environment and models', T, async () => {
    const { gw } = ctx;
    const name = uniqueName('checkout');
    const p = await createProject(gw, { name });
    assert.match(p.id, /^proj_/);
    assert.equal(p.object, 'organization.project');
    assert.equal(p.name, name);
    assert.equal(p.environment, 'development');
    assert.equal(p.models, null);
    assert.equal(typeof p.created_at, 'number');
    assert.ok(Math.abs(p.created_at - Date.now() / 1000) < 120, 'created_at in Unix seconds');
    assert.equal(p.archived_at, null);
    assert.equal(p.status, 'active');

    const q = await createProject(gw, { name: uniqueName('eu'), environment: 'staging-eu', models: ['mock-small'] });
    assert.equal(q.environment, 'staging-eu');
    assert.deepEqual(q.models, ['mock-small']);

    const byId = await gw.adminFetch(`/v1/organization/projects/${q.id}`);
    assert.equal(byId.status, 200, byId.text);
    assert.deepEqual(byId.json, q);
    const byName = await gw.adminFetch(`/v1/organization/projects/${encodeURIComponent(q.name)}`);
    assert.deepEqual(byName.json, q);
    const listed = (await listProjects(gw)).find((x) => x.id === q.id);
    assert.deepEqual(listed, q);

    // A new project works at once: a key made for it can call a model it allows.
    const key = await gw.createKey(p.id, 'first');
    const r = await gw.client(key).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('new project') });
    assert.equal(r.choices[0].message.content, 'echo: new project');
});

test('modify: rename and change the environment label; the old name is free again', T, async () => {
    const { gw } = ctx;
    const oldName = uniqueName('rename-me');
    const newName = uniqueName('renamed');
    const p = await createProject(gw, { name: oldName, environment: 'production' });
    const r = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { name: newName } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.id, p.id);
    assert.equal(r.json.name, newName);
    assert.equal(r.json.environment, 'production', 'fields not named stay');
    assert.equal(r.json.created_at, p.created_at);
    const gone = await gw.adminFetch(`/v1/organization/projects/${encodeURIComponent(oldName)}`);
    assert.equal(gone.status, 404);
    const byNew = await gw.adminFetch(`/v1/organization/projects/${encodeURIComponent(newName)}`);
    assert.equal(byNew.json.id, p.id);

    const e = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { environment: 'qa' } });
    assert.equal(e.status, 200, e.text);
    assert.equal(e.json.environment, 'qa');
    assert.equal(e.json.name, newName);

    const again = await createProject(gw, { name: oldName });
    assert.notEqual(again.id, p.id);
});

test('models setting changes what /v1/models lists and what the key may call, at once', T, async () => {
    const { up, gw } = ctx;
    const p = await createProject(gw, { name: uniqueName('models'), models: ['mock-small'] });
    const key = await gw.createKey(p.id, 'models');
    const c = gw.client(key, { maxRetries: 0 });
    assert.deepEqual(await modelIds(gw, key), ['mock-small']);
    const mark = up.mark();
    const err = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('no') }).catch((e) => e);
    assert.ok(err instanceof OpenAI.NotFoundError, String(err));
    assert.equal(err.code, 'model_not_found');
    assert.equal(up.since(mark).length, 0, 'a refused model never reaches the upstream');
    const one = await gw.rawFetch('/v1/models/gpt-4o-mini', { headers: { authorization: `Bearer ${key}` } });
    assert.equal(one.status, 404);

    const m = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { models: ['gpt-4o-mini', 'azure-4o'] } });
    assert.equal(m.status, 200, m.text);
    assert.deepEqual(m.json.models, ['gpt-4o-mini', 'azure-4o']);
    assert.deepEqual(await modelIds(gw, key), ['azure-4o', 'gpt-4o-mini']);
    const ok = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('now yes') });
    assert.equal(ok.choices[0].message.content, 'echo: now yes');
    const no = await c.chat.completions.create({ model: 'mock-small', messages: msg('no') }).catch((e) => e);
    assert.equal(no.code, 'model_not_found');

    // null clears the setting: every routed model again (this project has no config entry).
    const cleared = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { models: null } });
    assert.equal(cleared.status, 200, cleared.text);
    assert.equal(cleared.json.models, null);
    assert.deepEqual(await modelIds(gw, key), ['azure-4o', 'gpt-4o-mini', 'mock-small', 'unreachable-model']);
});

test('isolation: a development key cannot use what development does not allow, nor see production', T, async () => {
    const { up, gw } = ctx;
    const key = await gw.createKey('development', 'isolation');
    const c = gw.client(key, { maxRetries: 0 });
    const mark = up.mark();
    // development may use only gpt-4o-mini and mock-small (config)
    const err = await c.chat.completions.create({ model: 'azure-4o', messages: msg('x') }).catch((e) => e);
    assert.ok(err instanceof OpenAI.NotFoundError, String(err));
    assert.equal(err.code, 'model_not_found');
    // the admin API (production's usage, its keys, its settings) refuses project keys
    for (const p of [
        '/v1/organization/usage/completions?start_time=0&project_ids=production',
        '/v1/organization/projects/production',
        '/v1/organization/projects/production/api_keys',
        '/v1/organization/projects/production/service_accounts',
    ]) {
        const r = await gw.adminFetch(p, { key });
        assertError(r, 403, p);
    }
    const w = await gw.adminFetch('/v1/organization/projects/production', { key, body: { models: ['azure-4o'] } });
    assertError(w, 403, 'a project key cannot change settings');
    // an OpenAI-Project header naming production is refused before anything is called
    const other = await gw
        .client(key, { maxRetries: 0, defaultHeaders: { 'OpenAI-Project': 'production' } })
        .chat.completions.create({ model: 'gpt-4o-mini', messages: msg('x') })
        .catch((e) => e);
    assert.ok(other instanceof OpenAI.AuthenticationError, String(other));
    assert.equal(other.code, 'mismatched_project');
    assert.equal(up.since(mark).length, 0);
    const prod = (await listProjects(gw)).find((p) => p.name === 'production');
    assert.equal(prod.models, null, 'nothing changed in production');
});

test('archive: keys stop at once, listed only with include_archived, no more changes', T, async () => {
    const { up, gw } = ctx;
    const p = await createProject(gw, { name: uniqueName('old-env') });
    const key = await gw.createKey(p.id, 'archived');
    const c = gw.client(key, { maxRetries: 0 });
    await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('before') });
    const a = await gw.adminFetch(`/v1/organization/projects/${p.id}/archive`, { method: 'POST' });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.id, p.id);
    assert.equal(a.json.status, 'archived');
    assert.equal(typeof a.json.archived_at, 'number');
    const mark = up.mark();
    for (let i = 0; i < 4; i++) {
        const fresh = gw.client(key, { maxRetries: 0, defaultHeaders: { connection: 'close' } });
        const err = await fresh.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('after') }).catch((e) => e);
        assert.ok(err instanceof OpenAI.PermissionDeniedError, `attempt ${i}: ${err}`);
        assert.match(err.message, /archived/);
    }
    assert.equal(up.since(mark).length, 0);
    assert.equal((await listProjects(gw)).find((x) => x.id === p.id), undefined);
    const all = await listProjects(gw, '&include_archived=true');
    assert.equal(all.find((x) => x.id === p.id)?.status, 'archived');
    const one = await gw.adminFetch(`/v1/organization/projects/${p.id}`);
    assert.equal(one.json.status, 'archived');

    // Archiving again changes nothing; renaming an archived project is refused.
    const twice = await gw.adminFetch(`/v1/organization/projects/${p.id}/archive`, { method: 'POST' });
    assert.equal(twice.status, 200, twice.text);
    assert.equal(twice.json.archived_at, a.json.archived_at);
    const rename = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { name: uniqueName('x') } });
    assertError(rename, 400, 'modify an archived project');
    const svc = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, { body: { name: 'bot' } });
    assertError(svc, 400, 'service account in an archived project');
});

test('bad input: OpenAI errors with the field named, nothing half-applied', T, async () => {
    const { gw } = ctx;
    const before = await listProjects(gw, '&include_archived=true');
    const taken = uniqueName('taken');
    await createProject(gw, { name: taken });
    const cases = [
        [{}, 400, 'name'],
        [{ name: '' }, 400, 'name'],
        [{ name: 'x'.repeat(65) }, 400, 'name'],
        [{ name: 42 }, 400, 'name'],
        [{ name: uniqueName('a'), environment: '' }, 400, 'environment'],
        [{ name: uniqueName('a'), environment: 7 }, 400, 'environment'],
        [{ name: uniqueName('a'), environment: 'e'.repeat(65) }, 400, 'environment'],
        [{ name: uniqueName('a'), models: 'gpt-4o-mini' }, 400, 'models'],
        [{ name: uniqueName('a'), models: ['gpt-4o-mini', 3] }, 400, 'models'],
        [{ name: uniqueName('a'), models: [''] }, 400, 'models'],
        [{ name: uniqueName('a'), residency: 'eu' }, 400, 'residency'],
        [{ name: taken }, 409, 'name'],
    ];
    for (const [body, status, param] of cases) {
        const r = await gw.adminFetch('/v1/organization/projects', { body });
        assertError(r, status, JSON.stringify(body));
        assert.equal(r.json.error.param, param, JSON.stringify(body));
    }
    const notJson = await gw.adminFetch('/v1/organization/projects', {
        body: '{"name": ',
        headers: { 'content-type': 'application/json' },
    });
    assertError(notJson, 400, 'malformed JSON');
    const after = await listProjects(gw, '&include_archived=true');
    assert.equal(after.length, before.length + 1, 'only the one good project was created');

    // Modify: one bad field refuses the whole change.
    const p = await createProject(gw, { name: uniqueName('atomic'), models: ['mock-small'] });
    for (const [body, status] of [
        [{ name: 'fine-name', models: 'nope' }, 400],
        [{ name: 'fine-name', environment: 5 }, 400],
        [{ name: taken, models: ['gpt-4o-mini'] }, 409],
        [{ name: 'fine-name', colour: 'blue' }, 400],
        [{ id: 'proj_other' }, 400],
    ]) {
        const r = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body });
        assertError(r, status, JSON.stringify(body));
    }
    const same = await gw.adminFetch(`/v1/organization/projects/${p.id}`);
    assert.deepEqual(same.json, p, 'nothing applied');

    // Dangling ids
    for (const [method, path] of [
        ['GET', '/v1/organization/projects/proj_doesnotexist'],
        ['POST', '/v1/organization/projects/proj_doesnotexist'],
        ['POST', '/v1/organization/projects/proj_doesnotexist/archive'],
        ['GET', '/v1/organization/projects/proj_doesnotexist/service_accounts'],
        ['GET', `/v1/organization/projects/${p.id}/service_accounts/svc_acct_doesnotexist`],
        ['DELETE', `/v1/organization/projects/${p.id}/service_accounts/svc_acct_doesnotexist`],
        ['POST', `/v1/organization/projects/${p.id}/service_accounts/svc_acct_doesnotexist/api_keys`],
    ]) {
        const r = await gw.adminFetch(path, { method, body: method === 'POST' ? {} : undefined });
        assertError(r, 404, `${method} ${path}`);
    }
});

test('service accounts: key shown once, works for inference, delete revokes every key', T, async () => {
    const { gw } = ctx;
    const p = await createProject(gw, { name: uniqueName('svc') });
    const r = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, { body: { name: 'Prod app' } });
    assert.equal(r.status, 200, r.text);
    const s = r.json;
    assert.equal(s.object, 'organization.project.service_account');
    assert.match(s.id, /^svc_acct_/);
    assert.equal(s.name, 'Prod app');
    assert.equal(s.role, 'member');
    assert.equal(typeof s.created_at, 'number');
    assert.equal(s.api_key.object, 'organization.project.service_account.api_key');
    assert.match(s.api_key.id, /^key_/);
    assert.match(s.api_key.value, KEY_RE);
    gw.clientKeys.push(s.api_key.value);
    const c1 = gw.client(s.api_key.value, { maxRetries: 0 });
    const ok = await c1.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('svc') });
    assert.equal(ok.choices[0].message.content, 'echo: svc');

    const k2 = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts/${s.id}/api_keys`, {
        body: { name: 'second' },
    });
    assert.equal(k2.status, 200, k2.text);
    assert.equal(k2.json.name, 'second');
    assert.match(k2.json.value, KEY_RE);
    gw.clientKeys.push(k2.json.value);
    const c2 = gw.client(k2.json.value, { maxRetries: 0 });
    await c2.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('second') });

    const list = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`);
    assert.equal(list.status, 200, list.text);
    assert.equal(list.json.object, 'list');
    assert.deepEqual(
        list.json.data.map((x) => x.id),
        [s.id],
    );
    assert.ok(!list.text.includes(s.api_key.value), 'no key value in a list');
    const one = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts/${s.id}`);
    assert.equal(one.status, 200, one.text);
    assert.equal(one.json.api_key, undefined);
    assert.equal(one.json.name, 'Prod app');

    // The project's key list names the service account as the owner of its keys.
    const keys = await gw.adminFetch(`/v1/organization/projects/${p.id}/api_keys?limit=100`);
    const listedKey = keys.json.data.find((k) => k.id === s.api_key.id);
    assert.ok(listedKey, 'service account key listed with the project keys');
    if (listedKey.owner !== undefined) {
        assert.equal(listedKey.owner.type, 'service_account');
        assert.equal(listedKey.owner.service_account.id, s.id);
    }

    // Another project does not see it.
    const elsewhere = await gw.adminFetch(`/v1/organization/projects/staging/service_accounts/${s.id}`);
    assertError(elsewhere, 404, 'service account of another project');

    const dup = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, { body: { name: 'Prod app' } });
    assertError(dup, 409, 'duplicate service account name');
    const other = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, {
        body: { name: 'Other', create_service_account_only: true },
    });
    const clash = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts/${other.json.id}`, {
        body: { name: 'Prod app' },
    });
    assertError(clash, 409, 'rename onto a taken name');
    const renamed = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts/${other.json.id}`, {
        body: { name: 'Batch job' },
    });
    assert.equal(renamed.status, 200, renamed.text);
    assert.equal(renamed.json.name, 'Batch job');
    assert.equal(renamed.json.id, other.json.id);

    const d = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts/${s.id}`, { method: 'DELETE' });
    assert.equal(d.status, 200, d.text);
    assert.deepEqual(d.json, { object: 'organization.project.service_account.deleted', id: s.id, deleted: true });
    for (const c of [c1, c2]) {
        const err = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('gone') }).catch((e) => e);
        assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
        assert.equal(err.code, 'invalid_api_key');
    }
    const after = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts/${s.id}`);
    assert.equal(after.status, 404);
    const keysAfter = await gw.adminFetch(`/v1/organization/projects/${p.id}/api_keys?limit=100`);
    for (const id of [s.api_key.id, k2.json.id]) {
        assert.equal(keysAfter.json.data.find((k) => k.id === id)?.status, 'revoked', id);
    }
});

test('service accounts: bad input and create_service_account_only', T, async () => {
    const { gw } = ctx;
    const p = await createProject(gw, { name: uniqueName('svc-bad') });
    const base = `/v1/organization/projects/${p.id}/service_accounts`;
    for (const body of [{}, { name: '' }, { name: 'n'.repeat(65) }, { name: 1 }, { name: 'ok', role: 'owner' }, { name: 'ok', create_service_account_only: 'yes' }]) {
        const r = await gw.adminFetch(base, { body });
        assertError(r, 400, JSON.stringify(body));
    }
    const empty = await gw.adminFetch(base);
    assert.deepEqual(empty.json.data, [], 'nothing half-created');
    const only = await gw.adminFetch(base, { body: { name: 'no key', create_service_account_only: true } });
    assert.equal(only.status, 200, only.text);
    assert.equal(only.json.api_key, null);
    const keys = await gw.adminFetch(`/v1/organization/projects/${p.id}/api_keys`);
    assert.deepEqual(keys.json.data, []);
});

async function auditOf(gw, projectId) {
    const r = await gw.adminFetch(`/v1/organization/audit_logs?project_ids=${projectId}&limit=100`);
    assert.equal(r.status, 200, r.text);
    return r.json.data.slice().reverse(); // oldest first
}

async function versionsOf(gw, projectId) {
    const r = await gw.adminFetch(`/v1/organization/projects/${projectId}/config_versions?limit=100`);
    assert.equal(r.status, 200, r.text);
    return r.json.data.slice().reverse();
}

test('each change is one audit entry; settings changes are numbered versions; refusals leave none', T, async () => {
    const { gw } = ctx;
    const p = await createProject(gw, { name: uniqueName('audited'), models: ['mock-small'] });
    let log = await auditOf(gw, p.id);
    assert.deepEqual(
        log.map((e) => e.type),
        ['project.created'],
    );
    assert.equal(log[0].after.name, p.name);
    assert.equal(log[0].before, null);
    let versions = await versionsOf(gw, p.id);
    assert.equal(versions.length, 1);
    assert.deepEqual(versions[0].settings, { models: ['mock-small'] });

    const renamed = uniqueName('audited-renamed');
    await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { name: renamed } });
    await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { name: renamed } }); // no-op
    await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { models: ['gpt-4o-mini'] } });
    const refused = await gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { name: 'production', models: null } });
    assert.equal(refused.status, 409, refused.text);
    log = await auditOf(gw, p.id);
    assert.deepEqual(
        log.map((e) => e.type),
        ['project.created', 'project.updated', 'project.updated'],
    );
    assert.equal(log[1].before.name, p.name);
    assert.equal(log[1].after.name, renamed);
    assert.deepEqual(log[2].after.models, ['gpt-4o-mini']);
    versions = await versionsOf(gw, p.id);
    assert.equal(versions.length, 2, 'a rename is no settings version; the refused change none');
    assert.deepEqual(versions[1].settings, { models: ['gpt-4o-mini'] });
    assert.ok(versions[1].number > versions[0].number);

    const s = await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, { body: { name: 'bot' } });
    gw.clientKeys.push(s.json.api_key.value);
    await gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts/${s.json.id}`, { method: 'DELETE' });
    await gw.adminFetch(`/v1/organization/projects/${p.id}/archive`, { method: 'POST' });
    log = await auditOf(gw, p.id);
    assert.deepEqual(
        log.slice(3).map((e) => e.type),
        ['service_account.created', 'api_key.created', 'service_account.deleted', 'project.archived'],
    );
    assert.deepEqual(log[5].before.revoked_api_keys, [s.json.api_key.id]);
    assert.ok(!JSON.stringify(log).includes(s.json.api_key.value), 'no key value in the audit log');
    assert.equal(log[6].after.status, 'archived');
    const verify = await gw.adminFetch('/v1/organization/audit_logs/verify');
    assert.equal(verify.json.valid, true, verify.text);
});

// An organization user with an admin key of their own, made through an invite.
async function inviteUser(gw, email, role) {
    const inv = await gw.adminFetch('/v1/organization/invites', { body: { email, role } });
    assert.equal(inv.status, 200, inv.text);
    const acc = await gw.adminFetch('/v1/organization/invites/accept', {
        key: null,
        body: { token: inv.json.token, name: email.split('@')[0] },
    });
    assert.equal(acc.status, 200, acc.text);
    gw.clientKeys.push(acc.json.admin_api_key.value);
    return { id: acc.json.id, email, key: acc.json.admin_api_key.value };
}

test('members: add, list, change role, remove; what a reader may do follows membership', T, async () => {
    const { gw } = ctx;
    const reader = await inviteUser(gw, `reader-${process.pid}@example.com`, 'reader');
    const other = await inviteUser(gw, `other-${process.pid}@example.com`, 'reader');
    const p = await createProject(gw, { name: uniqueName('team') });
    const base = `/v1/organization/projects/${p.id}`;
    const asReader = (path, opts = {}) => gw.adminFetch(path, { ...opts, key: reader.key });

    const denied = await asReader(base);
    assertError(denied, 403, 'a reader outside the project');
    assert.equal(denied.json.error.code, 'not_a_project_member');

    const add = await gw.adminFetch(`${base}/users`, { body: { user_id: reader.id, role: 'member' } });
    assert.equal(add.status, 200, add.text);
    assert.equal(add.json.object, 'organization.project.user');
    assert.equal(add.json.id, reader.id);
    assert.equal(add.json.email, reader.email);
    assert.equal(add.json.role, 'member');
    assert.equal(typeof add.json.added_at, 'number');
    const byEmail = await gw.adminFetch(`${base}/users`, { body: { email: other.email.toUpperCase(), role: 'owner' } });
    assert.equal(byEmail.status, 200, byEmail.text);
    assert.equal(byEmail.json.id, other.id);

    for (const [body, status] of [
        [{ user_id: reader.id, role: 'member' }, 409],
        [{ user_id: 'user-doesnotexist', role: 'member' }, 404],
        [{ email: 'nobody@example.com', role: 'member' }, 404],
        [{ user_id: reader.id, role: 'admin' }, 400],
        [{ user_id: reader.id }, 400],
        [{ role: 'member' }, 400],
        [{ user_id: reader.id, email: reader.email, role: 'member' }, 400],
        [{ user_id: reader.id, role: 'member', extra: 1 }, 400],
    ]) {
        assertError(await gw.adminFetch(`${base}/users`, { body }), status, JSON.stringify(body));
    }
    const list = await gw.adminFetch(`${base}/users`);
    assert.equal(list.status, 200, list.text);
    assert.deepEqual(list.json.data.map((u) => [u.id, u.role]), [
        [reader.id, 'member'],
        [other.id, 'owner'],
    ]);
    const one = await gw.adminFetch(`${base}/users/${reader.id}`);
    assert.deepEqual(one.json, add.json);
    assertError(await gw.adminFetch(`${base}/users/user-doesnotexist`), 404, 'dangling member');

    // A member reader sees the project (and only the projects they belong to) and manages its
    // service accounts, but may neither change the project nor its members.
    assert.equal((await asReader(base)).status, 200);
    const mine = await asReader('/v1/organization/projects?limit=100');
    assert.deepEqual(mine.json.data.map((x) => x.id), [p.id]);
    const svc = await asReader(`${base}/service_accounts`, { body: { name: 'reader-made' } });
    assert.equal(svc.status, 200, svc.text);
    gw.clientKeys.push(svc.json.api_key.value);
    assertError(await asReader(base, { body: { name: uniqueName('nope') } }), 403, 'member renames');
    assertError(await asReader(`${base}/users`, { body: { user_id: other.id, role: 'member' } }), 403, 'member adds');
    assertError(await asReader(`${base}/archive`, { method: 'POST' }), 403, 'member archives');

    // A project owner may change the project, still not archive it.
    const promote = await gw.adminFetch(`${base}/users/${reader.id}`, { body: { role: 'owner' } });
    assert.equal(promote.status, 200, promote.text);
    assert.equal(promote.json.role, 'owner');
    assertError(await gw.adminFetch(`${base}/users/${reader.id}`, { body: { role: 'boss' } }), 400, 'bad role');
    const renamed = await asReader(base, { body: { environment: 'reader-env' } });
    assert.equal(renamed.status, 200, renamed.text);
    assert.equal(renamed.json.environment, 'reader-env');
    assertError(await asReader(`${base}/archive`, { method: 'POST' }), 403, 'project owner archives');

    const del = await gw.adminFetch(`${base}/users/${other.id}`, { method: 'DELETE' });
    assert.equal(del.status, 200, del.text);
    assert.deepEqual(del.json, { object: 'organization.project.user.deleted', id: other.id, deleted: true });
    assertError(await gw.adminFetch(`${base}/users/${other.id}`, { method: 'DELETE' }), 404, 'deleted twice');

    // Service accounts survive the departure of the person who made them.
    const gone = await gw.adminFetch(`/v1/organization/users/${reader.id}`, { method: 'DELETE' });
    assert.equal(gone.status, 200, gone.text);
    const c = gw.client(svc.json.api_key.value, { maxRetries: 0 });
    const ok = await c.chat.completions.create({ model: 'gpt-4o-mini', messages: msg('still here') });
    assert.equal(ok.choices[0].message.content, 'echo: still here');
    const still = await gw.adminFetch(`${base}/service_accounts/${svc.json.id}`);
    assert.equal(still.status, 200, still.text);
    const members = await gw.adminFetch(`${base}/users`);
    assert.deepEqual(members.json.data, [], 'a departed user is no member');
});

shutdownTest(ctx);
