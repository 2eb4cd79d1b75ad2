// history.test.mjs: config history (numbered versions of project settings, diff, rollback that
// restores settings and never resurrects revoked keys) and the declarative YAML export/apply
// (dry run, idempotence, restoring an old export, export again equals the first file, and bad
// files refused with the line named and nothing applied).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';

const ctx = useGateway();

let seq = 0;
function uniqueName(base) {
    seq += 1;
    return `${base}-${process.pid}-${seq}`;
}

async function ok(r) {
    const res = await r;
    assert.equal(res.status, 200, res.text);
    return res.json;
}

async function setModels(gw, project, models) {
    return ok(gw.adminFetch(`/v1/organization/projects/${project}`, { body: { models } }));
}

async function versions(gw, query) {
    return ok(gw.adminFetch(`/v1/organization/config_versions${query}`));
}

async function chatStatus(gw, key, model) {
    try {
        await gw.client(key, { maxRetries: 0 }).chat.completions.create({ model, messages: msg('hi') });
        return 200;
    } catch (e) {
        return e.status;
    }
}

async function exportYaml(gw) {
    const r = await gw.adminFetch('/v1/organization/export');
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers.get('content-type'), /^application\/yaml/);
    return r.text;
}

function apply(gw, yaml, dryRun) {
    return gw.adminFetch(`/v1/organization/apply?dry_run=${dryRun ? 'true' : 'false'}`, {
        method: 'POST',
        headers: { 'content-type': 'application/yaml' },
        body: yaml,
    });
}

test('history: every models change is a version; list, retrieve, diff', T, async () => {
    const { gw } = ctx;
    const name = uniqueName('hist');
    const p = await ok(gw.adminFetch('/v1/organization/projects', { body: { name, models: ['gpt-4o-mini'] } }));
    await setModels(gw, p.id, ['gpt-4o-mini', 'mock-small']);
    await setModels(gw, p.id, ['mock-small']);

    const list = await versions(gw, `?project_id=${p.id}`);
    assert.equal(list.object, 'list');
    assert.equal(list.data.length, 3);
    const [v3, v2, v1] = list.data;
    assert.ok(v3.number > v2.number && v2.number > v1.number, 'newest first');
    for (const v of list.data) {
        assert.equal(v.object, 'organization.config_version');
        assert.equal(v.project_id, p.id);
        assert.equal(v.project_name, name);
        assert.equal(typeof v.created_at, 'number');
        assert.match(v.actor_id, /^key_/);
        assert.equal(typeof v.reason, 'string');
    }
    assert.deepEqual(v1.settings.models, ['gpt-4o-mini']);
    assert.deepEqual(v2.settings.models, ['gpt-4o-mini', 'mock-small']);
    assert.deepEqual(v3.settings.models, ['mock-small']);
    assert.equal(list.first_id, String(v3.number));

    const byName = await versions(gw, `?project_id=${encodeURIComponent(name)}`);
    assert.deepEqual(byName.data, list.data);
    const scoped = await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/config_versions`));
    assert.deepEqual(scoped.data, list.data);
    const page = await versions(gw, `?project_id=${p.id}&limit=1&after=${v3.number}`);
    assert.deepEqual(page.data, [v2]);
    assert.equal(page.has_more, true);

    const one = await ok(gw.adminFetch(`/v1/organization/config_versions/${v2.number}`));
    assert.deepEqual(one, v2);

    const diff = await ok(gw.adminFetch(`/v1/organization/config_versions/diff?from=${v1.number}&to=${v3.number}`));
    assert.equal(diff.object, 'organization.config_version.diff');
    assert.equal(diff.from, v1.number);
    assert.equal(diff.to, v3.number);
    assert.deepEqual(diff.changes, [{ path: 'models', change: 'changed', old: ['gpt-4o-mini'], new: ['mock-small'] }]);
    const same = await ok(gw.adminFetch(`/v1/organization/config_versions/diff?from=${v2.number}&to=${v2.number}`));
    assert.deepEqual(same.changes, []);

    for (const [path, status] of [
        ['/v1/organization/config_versions/999999', 404],
        ['/v1/organization/config_versions/abc', 400],
        [`/v1/organization/config_versions/diff?from=${v1.number}`, 400],
        [`/v1/organization/config_versions/diff?from=${v1.number}&to=999999`, 404],
        ['/v1/organization/config_versions?project_id=proj_nope', 404],
    ]) {
        const r = await gw.adminFetch(path);
        assert.equal(r.status, status, `${path}: ${r.text}`);
        assert.equal(typeof r.json.error.message, 'string');
    }
});

test('rollback restores the settings as a new version, at once, and revoked keys stay revoked', T, async () => {
    const { gw } = ctx;
    const p = await ok(gw.adminFetch('/v1/organization/projects', { body: { name: uniqueName('rb'), models: ['gpt-4o-mini'] } }));
    const live = await gw.createKey(p.id, 'live');
    const revoked = await gw.createKeyObject(p.id, 'revoked');
    await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/api_keys/${revoked.id}`, { method: 'DELETE' }));
    const [v1] = (await versions(gw, `?project_id=${p.id}`)).data;
    await setModels(gw, p.id, ['mock-small']);
    assert.equal(await chatStatus(gw, live, 'gpt-4o-mini'), 404, 'the new models setting is in force');

    const r = await gw.adminFetch(`/v1/organization/config_versions/${v1.number}/rollback`, { method: 'POST', body: {} });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'organization.config_version');
    assert.equal(r.json.reason, `rollback to ${v1.number}`);
    assert.equal(r.json.project_id, p.id);
    assert.deepEqual(r.json.settings, v1.settings);
    const list = await versions(gw, `?project_id=${p.id}`);
    assert.equal(list.data.length, 3);
    assert.equal(list.data[0].number, r.json.number, 'the rollback is the newest version');

    assert.equal(await chatStatus(gw, live, 'gpt-4o-mini'), 200, 'the old setting is back at once');
    assert.equal(await chatStatus(gw, revoked.value, 'gpt-4o-mini'), 401, 'a revoked key stays revoked');
    const keys = await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/api_keys?limit=100`));
    assert.equal(keys.data.find((k) => k.id === revoked.id)?.status ?? 'revoked', 'revoked');

    const audit = await ok(gw.adminFetch(`/v1/organization/audit_logs?event_types[]=config.rolled_back&project_ids[]=${p.id}`));
    assert.equal(audit.data.length, 1);
    assert.deepEqual(audit.data[0].before.settings.models, ['mock-small']);
    assert.deepEqual(audit.data[0].after.settings.models, ['gpt-4o-mini']);
    assert.equal(audit.data[0].after.rolled_back_to, v1.number);

    const missing = await gw.adminFetch('/v1/organization/config_versions/999999/rollback', { method: 'POST', body: {} });
    assert.equal(missing.status, 404);
    const extra = await gw.adminFetch(`/v1/organization/config_versions/${v1.number}/rollback`, { method: 'POST', body: { force: true } });
    assert.equal(extra.status, 400);
    assert.equal((await versions(gw, `?project_id=${p.id}`)).data.length, 3, 'refused rollbacks add no version');
});

test('export: YAML of users, projects, members, service accounts; no ids, no key material', T, async () => {
    const { gw } = ctx;
    const p = await ok(gw.adminFetch('/v1/organization/projects', {
        body: { name: uniqueName('exp'), environment: 'staging', models: ['gpt-4o-mini'] },
    }));
    const sa = await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, { body: { name: 'nightly' } }));
    const yaml = await exportYaml(gw);
    assert.match(yaml, /^version: 1\n/);
    assert.match(yaml, /\nusers:\n/);
    assert.match(yaml, /\nprojects:\n/);
    assert.ok(yaml.includes(`- name: ${p.name}\n  environment: staging\n  archived: false\n  settings:\n    models: [gpt-4o-mini]\n`), yaml);
    assert.ok(yaml.includes('  service_accounts:\n  - name: nightly\n    role: member\n'), yaml);
    for (const secret of [p.id, sa.id, sa.api_key?.value, gw.adminKey, 'proj_', 'key_', 'user-', 'tg-'].filter(Boolean)) {
        assert.ok(!yaml.includes(secret), `export holds ${secret}`);
    }
    assert.equal(await exportYaml(gw), yaml, 'the same state exports the same file');
});

test('apply: an export of the same state changes nothing; an old export restores the state', T, async () => {
    const { gw } = ctx;
    const p = await ok(gw.adminFetch('/v1/organization/projects', { body: { name: uniqueName('app'), models: ['gpt-4o-mini'] } }));
    const first = await exportYaml(gw);

    for (const dry of [true, false]) {
        const r = await apply(gw, first, dry);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.object, 'organization.apply');
        assert.equal(r.json.dry_run, dry);
        assert.deepEqual(r.json.changes, []);
    }
    const wrapped = await gw.adminFetch('/v1/organization/apply?dry_run=true', { body: { yaml: first } });
    assert.equal(wrapped.status, 200, wrapped.text);
    assert.deepEqual(wrapped.json.changes, []);

    // Change things the file covers: models, environment, a service account, a member's role.
    const key = await gw.createKey(p.id, 'app');
    await setModels(gw, p.id, ['mock-small']);
    await ok(gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { environment: 'production' } }));
    await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, { body: { name: 'temp-bot' } }));
    assert.notEqual(await exportYaml(gw), first);

    const dry = await apply(gw, first, true);
    assert.equal(dry.status, 200, dry.text);
    const summary = dry.json.changes.map((c) => `${c.action} ${c.kind} ${c.name}`).sort();
    assert.deepEqual(summary, [`delete service_account ${p.name}/temp-bot`, `update project ${p.name}`]);
    const upd = dry.json.changes.find((c) => c.kind === 'project');
    assert.deepEqual(upd.before.settings.models, ['mock-small']);
    assert.deepEqual(upd.after.settings.models, ['gpt-4o-mini']);
    assert.equal(upd.before.environment, 'production');
    assert.equal(upd.after.environment, 'development');
    assert.equal(await chatStatus(gw, key, 'gpt-4o-mini'), 404, 'a dry run changes nothing');

    const applied = await apply(gw, first, false);
    assert.equal(applied.status, 200, applied.text);
    assert.deepEqual(applied.json.changes, dry.json.changes);
    assert.equal(await chatStatus(gw, key, 'gpt-4o-mini'), 200, 'the restored models are in force at once');
    assert.equal(await exportYaml(gw), first, 'export again equals the first file');
    assert.deepEqual((await apply(gw, first, false)).json.changes, []);

    const audit = await ok(gw.adminFetch(`/v1/organization/audit_logs?project_ids[]=${p.id}&limit=2`));
    assert.deepEqual(audit.data.map((e) => e.type).sort(), ['project.updated', 'service_account.deleted']);
    const upd2 = audit.data.find((e) => e.type === 'project.updated');
    assert.deepEqual(upd2.after.settings.models, ['gpt-4o-mini'], 'the entry holds the object after');
    const hist = await versions(gw, `?project_id=${p.id}&limit=1`);
    assert.equal(hist.data[0].reason, 'apply');
    assert.deepEqual(hist.data[0].settings.models, ['gpt-4o-mini']);
});

test('apply: creates what the file adds, archives a project it leaves out, users and members', T, async () => {
    const { gw } = ctx;
    const base = await exportYaml(gw);
    const name = uniqueName('declared');
    const email = `${uniqueName('dev')}@example.com`;
    const withProject = base
        .replace('users:\n', `users:\n- email: ${email}\n  name: Dev\n  role: reader\n`)
        .replace(
            'projects:\n',
            `projects:\n- name: ${name}\n  environment: qa\n  settings:\n    models: [mock-small]\n` +
                `  members:\n  - email: ${email}\n    role: member\n  service_accounts:\n  - name: ci\n`,
        );
    const r = await apply(gw, withProject, false);
    assert.equal(r.status, 200, r.text);
    const summary = r.json.changes.map((c) => `${c.action} ${c.kind} ${c.name}`).sort();
    assert.deepEqual(summary, [
        `create member ${name}/${email}`,
        `create project ${name}`,
        `create service_account ${name}/ci`,
        `create user ${email}`,
    ]);
    const p = await ok(gw.adminFetch(`/v1/organization/projects/${name}`));
    assert.equal(p.environment, 'qa');
    const users = await ok(gw.adminFetch('/v1/organization/users?limit=100'));
    assert.equal(users.data.find((u) => u.email === email)?.role, 'reader');
    const members = await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/users`));
    assert.deepEqual(members.data.map((m) => [m.email, m.role]), [[email, 'member']]);
    assert.deepEqual((await apply(gw, withProject, true)).json.changes, []);

    // The base file leaves the project and the user out: the project is archived (never
    // deleted), the user and the membership are deleted.
    const back = await apply(gw, base, false);
    assert.equal(back.status, 200, back.text);
    assert.deepEqual(back.json.changes.map((c) => `${c.action} ${c.kind} ${c.name}`).sort(), [
        `archive project ${name}`,
        `delete member ${name}/${email}`,
        `delete user ${email}`,
    ]);
    assert.equal((await ok(gw.adminFetch(`/v1/organization/projects/${name}`))).status, 'archived');
    const after = await ok(gw.adminFetch('/v1/organization/users?limit=100'));
    assert.equal(after.data.find((u) => u.email === email), undefined);
});

test('apply: names that read as numbers or booleans round-trip; a role change is an update', T, async () => {
    const { gw } = ctx;
    const digits = String(100000 + process.pid);
    const p = await ok(gw.adminFetch('/v1/organization/projects', { body: { name: digits } }));
    await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/service_accounts`, { body: { name: 'true' } }));
    const base = await exportYaml(gw);
    assert.ok(base.includes(`- name: "${digits}"\n`), base);
    assert.ok(base.includes('  - name: "true"\n'), base);
    assert.deepEqual((await apply(gw, base, true)).json.changes, []);

    const email = `${uniqueName('ops')}@example.com`;
    const asReader = base.replace('users:\n', `users:\n- email: ${email}\n  name: Ops\n  role: reader\n`);
    assert.equal((await apply(gw, asReader, false)).status, 200);
    const promoted = await apply(gw, asReader.replace(`name: Ops\n  role: reader`, 'name: Ops\n  role: owner'), false);
    assert.equal(promoted.status, 200, promoted.text);
    assert.deepEqual(promoted.json.changes.map((c) => [c.action, c.kind, c.name, c.before.role, c.after.role]), [
        ['update', 'user', email, 'reader', 'owner'],
    ]);
    const users = await ok(gw.adminFetch('/v1/organization/users?limit=100'));
    assert.equal(users.data.find((u) => u.email === email)?.role, 'owner');
    assert.equal((await apply(gw, base, false)).status, 200);
    assert.equal(await exportYaml(gw), base);
});

test('apply: bad files are refused with the line named, and nothing is applied', T, async () => {
    const { gw } = ctx;
    const base = await exportYaml(gw);
    const lines = base.split('\n');
    const projectsLine = lines.indexOf('projects:') + 1;
    const cases = [
        ['unknown key', base.replace('projects:\n- name:', 'projects:\n- colour: red\n  name:'), new RegExp(`line ${projectsLine + 1}\\b.*colour`)],
        ['unknown top-level key', `${base}teams: []\n`, /teams/],
        ['malformed YAML', 'users: [\n', /line/],
        ['wrong type', base.replace(/archived: false/, 'archived: maybe'), /archived/],
        ['dangling member', base.replace('projects:\n', 'projects:\n- name: ghost-members\n  members:\n  - email: nobody@example.com\n    role: member\n'), /nobody@example.com/],
        ['no owner', base.replace(/role: owner/g, 'role: reader'), /owner/],
        ['leaves out the caller', base.replace('email: owner@localhost', 'email: someone-else@example.com'), /your own user/],
        ['long name', base.replace('projects:\n', `projects:\n- name: ${'x'.repeat(65)}\n`), /name/],
        ['duplicate project', base.replace('projects:\n', 'projects:\n- name: dup\n- name: dup\n'), /dup/],
        ['unknown setting', base.replace('projects:\n', 'projects:\n- name: typo\n  settings:\n    modles: [gpt-4o-mini]\n'), new RegExp(`line ${projectsLine + 3}\\b.*modles`)],
        ['models not a list', base.replace('projects:\n', 'projects:\n- name: typo\n  settings:\n    models: gpt-4o-mini\n'), /models/],
        ['not a version 1 file', base.replace('version: 1', 'version: 2'), /version/],
    ];
    for (const [what, yaml, re] of cases) {
        const r = await apply(gw, yaml, false);
        assert.equal(r.status, 400, `${what}: ${r.text}`);
        assert.equal(r.json.error.type, 'invalid_request_error', what);
        assert.match(r.json.error.message, re, what);
    }
    const badFlag = await gw.adminFetch('/v1/organization/apply?dry_run=maybe', {
        method: 'POST', headers: { 'content-type': 'application/yaml' }, body: base,
    });
    assert.equal(badFlag.status, 400);
    assert.equal(await exportYaml(gw), base, 'nothing was applied');
});

test('apply: cache, token_policy and aliases settings round-trip through export and apply', T, async () => {
    const { gw } = ctx;
    const ORG = '/v1/organization';
    const p = await ok(gw.adminFetch(`${ORG}/projects`, { body: { name: uniqueName('rt') } }));
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}`, { body: { cache: { enabled: true, ttl_s: 120 } } }));
    const policy = { max_tokens: 100, on_max_tokens: 'refuse', default_stop: ['END'], forced_params: { temperature: 0 } };
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`, { body: policy }));
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/aliases`, { body: { fast: { model: 'gpt-4o-mini' } } }));
    const before = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`));
    const yaml = await exportYaml(gw);
    assert.ok(yaml.includes('    cache:\n') && yaml.includes('    token_policy:\n') && yaml.includes('    aliases:\n'), yaml);
    // The export applies as it is: nothing to change.
    const same = await apply(gw, yaml, false);
    assert.equal(same.status, 200, same.text);
    assert.deepEqual(same.json.changes, []);
    // Other settings, then the export: each member is back as it was.
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}`, { body: { cache: { enabled: false } } }));
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`, { body: { max_n: 1 } }));
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/aliases`, { body: { slow: { model: 'gpt-4o-mini' } } }));
    const back = await apply(gw, yaml, false);
    assert.equal(back.status, 200, back.text);
    assert.notDeepEqual(back.json.changes, []);
    assert.equal(await exportYaml(gw), yaml);
    assert.deepEqual(await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`)), before);
    // A file whose token policy its parser refuses is a 400 naming the line.
    const bad = await apply(gw, yaml.replace('on_max_tokens: refuse', 'on_max_tokens: maybe'), true);
    assert.equal(bad.status, 400, bad.text);
    assert.match(bad.text, /line \d+: settings\.token_policy/);
});

shutdownTest(ctx);
