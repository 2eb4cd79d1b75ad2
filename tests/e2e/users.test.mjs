// users.test.mjs: organization users, invites (one-time token, acceptance without a key,
// expiry, memberships), admin API keys (own keys, shown once, revocation), role changes that
// follow into the user's keys, and the last owner who can be neither demoted nor removed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';

const ctx = useGateway({ gateway: { env: { TOLLGATE_ADMIN_EMAIL: 'Boss@Example.com' } } });
const KEY_RE = /^tg-[A-Za-z0-9_-]{43}$/;
let seq = 0;

// Invites email as role (with projects) and accepts; returns { user, key, invite }.
async function join(gw, role, projects = []) {
    const email = `person${++seq}-${Date.now()}@example.com`;
    const inv = await gw.adminFetch('/v1/organization/invites', { body: { email, role, projects } });
    assert.equal(inv.status, 200, inv.text);
    const acc = await gw.adminFetch('/v1/organization/invites/accept', {
        key: null,
        body: { token: inv.json.token, name: `Person ${seq}` },
    });
    assert.equal(acc.status, 200, acc.text);
    gw.clientKeys.push(acc.json.admin_api_key.value);
    return { user: acc.json, key: acc.json.admin_api_key.value, invite: inv.json };
}

test('the owner user exists from the first start and holds the admin key', T, async () => {
    const { gw } = ctx;
    const r = await gw.adminFetch('/v1/organization/users');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    const owner = r.json.data.find((u) => u.email === 'boss@example.com');
    assert.ok(owner, r.text);
    assert.equal(owner.object, 'organization.user');
    assert.equal(owner.role, 'owner');
    assert.equal(owner.name, 'Owner');
    assert.match(owner.id, /^user-/);
    assert.equal(typeof owner.added_at, 'number');
    const keys = await gw.adminFetch('/v1/organization/admin_api_keys');
    assert.equal(keys.status, 200, keys.text);
    assert.ok(keys.json.data.some((k) => k.owner.id === owner.id && k.status === 'active'), keys.text);
});

test('invite: token shown once, accept without a key, memberships, then not again', T, async () => {
    const { gw } = ctx;
    const email = `new-${Date.now()}@Example.com`;
    const inv = await gw.adminFetch('/v1/organization/invites', {
        body: { email, role: 'reader', projects: [{ id: 'staging', role: 'member' }] },
    });
    assert.equal(inv.status, 200, inv.text);
    assert.equal(inv.json.object, 'organization.invite');
    assert.match(inv.json.id, /^invite-/);
    assert.equal(inv.json.email, email.toLowerCase());
    assert.equal(inv.json.status, 'pending');
    assert.equal(inv.json.accepted_at, null);
    const days = (inv.json.expires_at - inv.json.created_at) / 86400;
    assert.ok(days > 6.9 && days < 7.1, `expires in ${days} days`);
    assert.match(inv.json.projects[0].id, /^proj_/);
    assert.equal(typeof inv.json.token, 'string');
    const again = await gw.adminFetch(`/v1/organization/invites/${inv.json.id}`);
    assert.equal(again.status, 200);
    assert.equal(again.json.token, undefined, 'the token is shown once');
    assert.ok(!again.text.includes(inv.json.token));
    const list = await gw.adminFetch('/v1/organization/invites?limit=100');
    assert.ok(!list.text.includes(inv.json.token));
    assert.ok(list.json.data.some((x) => x.id === inv.json.id));

    const bad = await gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: 'tginv-nope' } });
    assert.equal(bad.status, 404, bad.text);
    const acc = await gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.json.token } });
    assert.equal(acc.status, 200, acc.text);
    assert.equal(acc.json.object, 'organization.user');
    assert.equal(acc.json.role, 'reader');
    assert.equal(acc.json.email, email.toLowerCase());
    const k = acc.json.admin_api_key;
    assert.equal(k.object, 'organization.admin_api_key');
    assert.match(k.value, KEY_RE);
    gw.clientKeys.push(k.value);
    const twice = await gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.json.token } });
    assert.equal(twice.status, 400, twice.text);
    const after = await gw.adminFetch(`/v1/organization/invites/${inv.json.id}`);
    assert.equal(after.json.status, 'accepted');
    assert.equal(typeof after.json.accepted_at, 'number');

    // The new key works at once and sees only the project of the invite.
    const projects = await gw.adminFetch('/v1/organization/projects', { key: k.value });
    assert.equal(projects.status, 200, projects.text);
    assert.deepEqual(projects.json.data.map((p) => p.name), ['staging']);
    const theirs = await gw.adminFetch('/v1/organization/projects/production/api_keys', { key: k.value });
    assert.equal(theirs.status, 403);
    assert.equal(theirs.json.error.code, 'not_a_project_member');
    const mine = await gw.adminFetch('/v1/organization/projects/staging/api_keys', { key: k.value, body: { name: 'r' } });
    assert.equal(mine.status, 200, mine.text);
    gw.clientKeys.push(mine.json.value);
});

test('invite bad input: e-mail, role, projects, days, unknown field, duplicates', T, async () => {
    const { gw } = ctx;
    const cases = [
        [{ email: 'not-an-email', role: 'reader' }, 400, 'email'],
        [{ email: 'a@b.co', role: 'admin' }, 400, 'role'],
        [{ role: 'reader' }, 400, 'email'],
        [{ email: 'a@b.co', role: 'reader', color: 'red' }, 400, 'color'],
        [{ email: 'a@b.co', role: 'reader', projects: [{ id: 'nope', role: 'member' }] }, 400, 'projects'],
        [{ email: 'a@b.co', role: 'reader', projects: 'staging' }, 400, 'projects'],
        [{ email: 'a@b.co', role: 'reader', expires_in_days: 0 }, 400, 'expires_in_days'],
        [{ email: `${'x'.repeat(260)}@b.co`, role: 'reader' }, 400, 'email'],
        [{ email: 'boss@example.com', role: 'reader' }, 409, 'email'],
    ];
    for (const [body, status, param] of cases) {
        const r = await gw.adminFetch('/v1/organization/invites', { body });
        assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
        assert.equal(r.json.error.param, param, r.text);
    }
    const ok = await gw.adminFetch('/v1/organization/invites', { body: { email: 'dup@b.co', role: 'reader' } });
    assert.equal(ok.status, 200, ok.text);
    const dup = await gw.adminFetch('/v1/organization/invites', { body: { email: 'DUP@b.co', role: 'owner' } });
    assert.equal(dup.status, 409, dup.text);
    const badJson = await gw.adminFetch('/v1/organization/invites', { body: '{"email":' , headers: { 'content-type': 'application/json' } });
    assert.equal(badJson.status, 400);
    const del = await gw.adminFetch(`/v1/organization/invites/${ok.json.id}`, { method: 'DELETE' });
    assert.deepEqual(del.json, { object: 'organization.invite.deleted', id: ok.json.id, deleted: true });
    const gone = await gw.adminFetch(`/v1/organization/invites/${ok.json.id}`);
    assert.equal(gone.status, 404);
    const refused = await gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: ok.json.token } });
    assert.equal(refused.status, 404);
});

test('role change follows into the user\'s admin keys; last owner protected', T, async () => {
    const { gw } = ctx;
    const { user, key } = await join(gw, 'reader');
    const denied = await gw.adminFetch('/v1/organization/invites', { key });
    assert.equal(denied.status, 403);
    assert.equal(denied.json.error.code, 'insufficient_role');
    const up = await gw.adminFetch(`/v1/organization/users/${user.id}`, { body: { role: 'owner' } });
    assert.equal(up.status, 200, up.text);
    assert.equal(up.json.role, 'owner');
    const now = await gw.adminFetch('/v1/organization/invites', { key });
    assert.equal(now.status, 200, now.text);
    for (const body of [{ role: 'boss' }, { role: 'owner', name: 'x' }, {}]) {
        const r = await gw.adminFetch(`/v1/organization/users/${user.id}`, { body });
        assert.equal(r.status, 400, r.text);
    }
    const down = await gw.adminFetch(`/v1/organization/users/${user.id}`, { body: { role: 'reader' } });
    assert.equal(down.json.role, 'reader');
    assert.equal((await gw.adminFetch('/v1/organization/invites', { key })).status, 403);

    // The owner user alone: the last owner can neither be demoted nor removed.
    const users = (await gw.adminFetch('/v1/organization/users?limit=100')).json.data;
    const owners = users.filter((u) => u.role === 'owner');
    assert.equal(owners.length, 1, JSON.stringify(users));
    const demote = await gw.adminFetch(`/v1/organization/users/${owners[0].id}`, { body: { role: 'reader' } });
    assert.equal(demote.status, 400, demote.text);
    const remove = await gw.adminFetch(`/v1/organization/users/${owners[0].id}`, { method: 'DELETE' });
    assert.equal(remove.status, 400, remove.text);
    assert.equal((await gw.adminFetch(`/v1/organization/users/${owners[0].id}`)).json.role, 'owner');
});

test('deleting a user revokes their admin keys; their project keys keep working', T, async () => {
    const { gw } = ctx;
    const { user, key } = await join(gw, 'reader', [{ id: 'development', role: 'member' }]);
    const pk = await gw.adminFetch('/v1/organization/projects/development/api_keys', { key, body: { name: 'left-behind' } });
    assert.equal(pk.status, 200, pk.text);
    gw.clientKeys.push(pk.json.value);
    assert.equal(pk.json.owner.user.id, user.id);
    const del = await gw.adminFetch(`/v1/organization/users/${user.id}`, { method: 'DELETE' });
    assert.deepEqual(del.json, { object: 'organization.user.deleted', id: user.id, deleted: true });
    assert.equal((await gw.adminFetch('/v1/organization/projects', { key })).status, 401);
    assert.equal((await gw.adminFetch(`/v1/organization/users/${user.id}`)).status, 404);
    const r = await gw.client(pk.json.value).chat.completions.create({
        model: 'gpt-4o-mini',
        messages: [{ role: 'user', content: 'still here' }],
    });
    assert.equal(r.choices[0].message.content, 'echo: still here');
});

test('admin API keys: readers make and see only their own; owners see all', T, async () => {
    const { gw } = ctx;
    const a = await join(gw, 'reader');
    const b = await join(gw, 'reader');
    const made = await gw.adminFetch('/v1/organization/admin_api_keys', { key: a.key, body: { name: 'laptop' } });
    assert.equal(made.status, 200, made.text);
    assert.match(made.json.value, KEY_RE);
    gw.clientKeys.push(made.json.value);
    assert.equal(made.json.owner.id, a.user.id);
    assert.equal(made.json.owner.role, 'reader');
    const listA = await gw.adminFetch('/v1/organization/admin_api_keys?limit=100', { key: a.key });
    assert.ok(listA.json.data.every((k) => k.owner.id === a.user.id), listA.text);
    assert.equal(listA.json.data.length, 2);
    assert.ok(!listA.text.includes(made.json.value));
    const seenByB = await gw.adminFetch(`/v1/organization/admin_api_keys/${made.json.id}`, { key: b.key });
    assert.equal(seenByB.status, 404);
    const delByB = await gw.adminFetch(`/v1/organization/admin_api_keys/${made.json.id}`, { key: b.key, method: 'DELETE' });
    assert.equal(delByB.status, 404);
    const all = await gw.adminFetch('/v1/organization/admin_api_keys?limit=100');
    assert.ok(all.json.data.some((k) => k.id === made.json.id));
    assert.ok(all.json.data.some((k) => k.owner.id === b.user.id));
    const del = await gw.adminFetch(`/v1/organization/admin_api_keys/${made.json.id}`, { key: a.key, method: 'DELETE' });
    assert.deepEqual(del.json, { object: 'organization.admin_api_key.deleted', id: made.json.id, deleted: true });
    assert.equal((await gw.adminFetch('/v1/organization/users', { key: made.json.value })).status, 401);
    assert.equal((await gw.adminFetch('/v1/organization/users', { key: a.key })).status, 200);
    const page = await gw.adminFetch('/v1/organization/users?limit=1');
    assert.equal(page.json.data.length, 1);
    assert.equal(page.json.has_more, true);
    const badLimit = await gw.adminFetch('/v1/organization/users?limit=0');
    assert.equal(badLimit.status, 400);
});

shutdownTest(ctx);
