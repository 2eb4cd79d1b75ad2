// audit.test.mjs: the audit log through the admin API: changes made through the API become
// entries (actor, type, before/after, source address) in OpenAI's shape; the filters and
// cursors; the hash chain verifies; and editing or deleting a row of the SQLite file directly
// is reported by verify with the entry's number.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';

const execFileP = promisify(execFile);
const ctx = useGateway();

let seq = 0;
function uniqueName(base) {
    seq += 1;
    return `${base}-${process.pid}-${seq}`;
}

async function sql(gw, statement) {
    const { stdout } = await execFileP('sqlite3', ['-cmd', '.timeout 5000', gw.dbPath, statement]);
    return stdout.trim();
}

async function logs(gw, query = '') {
    const r = await gw.adminFetch(`/v1/organization/audit_logs${query}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    return r.json;
}

async function verify(gw) {
    const r = await gw.adminFetch('/v1/organization/audit_logs/verify');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'organization.audit_log.verification');
    return r.json;
}

// A project created and then changed through the API: two entries of this test's own.
async function createAndChange(gw) {
    const name = uniqueName('audited');
    const c = await gw.adminFetch('/v1/organization/projects', { body: { name, models: ['gpt-4o-mini'] } });
    assert.equal(c.status, 200, c.text);
    const u = await gw.adminFetch(`/v1/organization/projects/${c.json.id}`, {
        body: { models: ['gpt-4o-mini', 'mock-small'] },
    });
    assert.equal(u.status, 200, u.text);
    return c.json;
}

test('changes through the admin API are entries with actor, type, before/after and source', T, async () => {
    const { gw } = ctx;
    const p = await createAndChange(gw);
    const key = await gw.createKeyObject(p.id, 'audited-key');
    const page = await logs(gw, `?project_ids[]=${p.id}&limit=100`);
    const types = page.data.map((e) => e.type);
    assert.deepEqual(types, ['api_key.created', 'project.updated', 'project.created']);

    const created = page.data[2];
    assert.match(created.id, /^audit_log-/);
    assert.equal(created.object, 'organization.audit_log');
    assert.equal(typeof created.effective_at, 'number');
    assert.ok(Math.abs(created.effective_at - Date.now() / 1000) < 120, 'effective_at in Unix seconds');
    assert.deepEqual(created.project, { id: p.id, name: p.name });
    assert.equal(created.actor.type, 'api_key');
    assert.match(created.actor.api_key.id, /^key_/);
    assert.equal(created.actor.api_key.type, 'user');
    assert.match(created.actor.api_key.user.id, /^user-/);
    assert.equal(typeof created.actor.api_key.user.email, 'string');
    assert.equal(created['project.created'].id, p.id);
    assert.equal(created.before, null);
    assert.equal(created.after.name, p.name);
    assert.equal(created.source_address, '127.0.0.1');
    assert.match(created.hash, /^[0-9a-f]{64}$/);
    assert.match(created.prev_hash, /^[0-9a-f]{64}$/);
    assert.equal(typeof created.seq, 'number');

    const updated = page.data[1];
    assert.equal(updated.seq, created.seq + 1, 'consecutive changes are consecutive entries');
    assert.equal(updated.prev_hash, created.hash, 'each entry holds the hash of the one before');
    assert.notEqual(updated.before, null);
    assert.notEqual(updated.after, null);
    assert.deepEqual(updated['project.updated'].changes_requested.models ?? updated['project.updated'].changes_requested.settings?.models,
        updated.after.models ?? updated.after.settings?.models);
    assert.notDeepEqual(updated.before, updated.after);

    const keyEntry = page.data[0];
    assert.equal(keyEntry['api_key.created'].id, key.id);
    assert.ok(!JSON.stringify(keyEntry).includes(key.value), 'no key material in the log');
    assert.equal(keyEntry.actor.api_key.id, created.actor.api_key.id);
});

test('filters: event types, projects by id or name, actors, time range', T, async () => {
    const { gw } = ctx;
    const a = await createAndChange(gw);
    const b = await createAndChange(gw);

    const byType = await logs(gw, '?event_types[]=project.created&limit=100');
    assert.ok(byType.data.length >= 2);
    assert.ok(byType.data.every((e) => e.type === 'project.created'));
    const ids = byType.data.map((e) => e['project.created'].id);
    assert.ok(ids.includes(a.id) && ids.includes(b.id));

    const twoTypes = await logs(gw, `?event_types[]=project.created&event_types[]=project.updated&project_ids[]=${a.id}`);
    assert.deepEqual(twoTypes.data.map((e) => e.type), ['project.updated', 'project.created']);

    const byName = await logs(gw, `?project_ids[]=${encodeURIComponent(b.name)}`);
    assert.equal(byName.data.length, 2);
    assert.ok(byName.data.every((e) => e.project.id === b.id));

    const both = await logs(gw, `?project_ids[]=${a.id}&project_ids[]=${b.id}`);
    assert.equal(both.data.length, 4);

    const actor = byName.data[0].actor.api_key.id;
    const mine = await logs(gw, `?actor_ids[]=${actor}&project_ids[]=${a.id}`);
    assert.equal(mine.data.length, 2);
    const nobody = await logs(gw, '?actor_ids[]=key_nobody');
    assert.deepEqual(nobody.data, []);
    assert.equal(nobody.first_id, null);
    assert.equal(nobody.has_more, false);

    const now = Math.floor(Date.now() / 1000);
    const future = await logs(gw, `?effective_at[gt]=${now + 3600}`);
    assert.deepEqual(future.data, []);
    const past = await logs(gw, `?effective_at[lt]=${now - 3600}`);
    assert.deepEqual(past.data, []);
    const window = await logs(gw, `?effective_at[gte]=${now - 3600}&effective_at[lte]=${now + 3600}&project_ids[]=${a.id}`);
    assert.equal(window.data.length, 2);

    const bad = await gw.adminFetch('/v1/organization/audit_logs?effective_at[gt]=yesterday');
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'effective_at[gt]');
    const badLimit = await gw.adminFetch('/v1/organization/audit_logs?limit=0');
    assert.equal(badLimit.status, 400);
});

test('pagination: limit, after and before walk the log newest first', T, async () => {
    const { gw } = ctx;
    await createAndChange(gw);
    const all = await logs(gw, '?limit=100');
    assert.ok(all.data.length >= 4);
    const seqs = all.data.map((e) => e.seq);
    assert.deepEqual(seqs, [...seqs].sort((x, y) => y - x), 'newest first');

    const first = await logs(gw, '?limit=2');
    assert.equal(first.data.length, 2);
    assert.equal(first.has_more, true);
    assert.equal(first.first_id, all.data[0].id);
    assert.equal(first.last_id, all.data[1].id);
    const second = await logs(gw, `?limit=2&after=${first.last_id}`);
    assert.deepEqual(second.data.map((e) => e.id), [all.data[2].id, all.data[3].id]);
    const back = await logs(gw, `?limit=2&before=${second.first_id}`);
    assert.deepEqual(back.data.map((e) => e.id), first.data.map((e) => e.id));
    assert.equal(back.has_more, false);
    const nearer = await logs(gw, `?limit=1&before=${all.data[3].id}`);
    assert.deepEqual(nearer.data.map((e) => e.id), [all.data[2].id]);
    assert.equal(nearer.has_more, true);

    const unknown = await gw.adminFetch('/v1/organization/audit_logs?after=audit_log-nope');
    assert.equal(unknown.status, 400);
});

test('a project key cannot read the audit log', T, async () => {
    const { gw } = ctx;
    const key = await gw.createKey('development', 'not-admin');
    for (const p of ['/v1/organization/audit_logs', '/v1/organization/audit_logs/verify']) {
        const r = await gw.adminFetch(p, { key });
        assert.ok(r.status === 401 || r.status === 403, `${p}: ${r.status}`);
    }
});

test('verify: the chain is valid; an edited entry and a deleted entry are found', T, async () => {
    const { gw } = ctx;
    await createAndChange(gw);
    await createAndChange(gw);
    const ok = await verify(gw);
    assert.equal(ok.valid, true, ok.reason);
    assert.equal(ok.first_invalid_seq, null);
    assert.equal(ok.reason, null);
    const all = await logs(gw, '?limit=100');
    assert.equal(ok.entries, all.data.length);
    assert.equal(ok.head_seq, all.data[0].seq);
    assert.equal(ok.head_hash, all.data[0].hash);

    // Edit one entry's "after" in the file: its hash no longer matches.
    const target = all.data[3];
    const original = await sql(gw, `SELECT after FROM audit WHERE seq = ${target.seq}`);
    await sql(gw, `UPDATE audit SET after = '{"name":"forged"}' WHERE seq = ${target.seq}`);
    const edited = await verify(gw);
    assert.equal(edited.valid, false);
    assert.equal(edited.first_invalid_seq, target.seq);
    assert.match(edited.reason, new RegExp(`entry ${target.seq}\\b`));

    // Put it back: valid again (the chain, not a flag, decides).
    await sql(gw, `UPDATE audit SET after = '${original.replaceAll("'", "''")}' WHERE seq = ${target.seq}`);
    assert.equal((await verify(gw)).valid, true);

    // Edit the hash along with the data: the next entry's link breaks instead.
    await sql(gw, `UPDATE audit SET type = 'project.deleted', hash = randomblob(32) WHERE seq = ${target.seq}`);
    const relinked = await verify(gw);
    assert.equal(relinked.valid, false);
    assert.equal(relinked.first_invalid_seq, target.seq);

    // Delete an entry from the middle: a gap at its number.
    const gone = all.data[1];
    await sql(gw, `DELETE FROM audit WHERE seq = ${gone.seq}`);
    const deleted = await verify(gw);
    assert.equal(deleted.valid, false);
    assert.ok(deleted.first_invalid_seq <= gone.seq);
    await sql(gw, `DELETE FROM audit WHERE seq = ${target.seq}`);
    const both = await verify(gw);
    assert.equal(both.first_invalid_seq, target.seq, 'the earliest break is reported');
    assert.match(both.reason, /missing/);
    assert.equal(both.head_seq, null);
});

shutdownTest(ctx);
