// ratelimits.test.mjs: project rate limits in the admin API (OpenAI's project.rate_limit): the
// list shape and which models it covers, partial updates read back, a config version and an
// audit entry per change (none for a change that changes nothing), rollback restoring them,
// export carrying them and apply round-tripping them, readers refused on POST, and bad input
// refused with nothing applied; the CLI's `rate-limits list` and `rate-limits set`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';
import { ALL_MODELS, DEV_MODELS } from './lib/gateway.mjs';

const ctx = useGateway();

const FIELDS = ['max_requests_per_1_minute', 'max_tokens_per_1_minute', 'max_requests_per_1_day', 'max_tokens_per_1_day'];

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

function newProject(gw, body) {
    return ok(gw.adminFetch('/v1/organization/projects', { body: { name: uniqueName('rl'), ...body } }));
}

function limits(gw, project, query = '') {
    return ok(gw.adminFetch(`/v1/organization/projects/${encodeURIComponent(project)}/rate_limits${query}`));
}

function setLimit(gw, project, model, body, key) {
    return gw.adminFetch(`/v1/organization/projects/${encodeURIComponent(project)}/rate_limits/rl-${model}`, { body, key });
}

async function versionCount(gw, project) {
    return (await ok(gw.adminFetch(`/v1/organization/config_versions?project_id=${project}&limit=100`))).data.length;
}

function apply(gw, yaml) {
    return gw.adminFetch('/v1/organization/apply?dry_run=false', {
        method: 'POST',
        headers: { 'content-type': 'application/yaml' },
        body: yaml,
    });
}

async function exportYaml(gw) {
    const r = await gw.adminFetch('/v1/organization/export');
    assert.equal(r.status, 200, r.text);
    return r.text;
}

test('list: one project.rate_limit per model the project may use, all null until set', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['mock-small', 'gpt-4o-mini'] });
    const list = await limits(gw, p.id);
    assert.equal(list.object, 'list');
    assert.equal(list.has_more, false);
    assert.deepEqual(list.data.map((l) => l.id), ['rl-mock-small', 'rl-gpt-4o-mini'], 'the models setting, in its order');
    assert.equal(list.first_id, 'rl-mock-small');
    assert.equal(list.last_id, 'rl-gpt-4o-mini');
    for (const l of list.data) {
        assert.equal(l.object, 'project.rate_limit');
        assert.equal(l.id, `rl-${l.model}`);
        assert.deepEqual(Object.keys(l), ['object', 'id', 'model', ...FIELDS]);
        for (const f of FIELDS) assert.equal(l[f], null, f);
    }
    const page = await limits(gw, p.id, '?limit=1&after=rl-mock-small');
    assert.deepEqual(page.data.map((l) => l.id), ['rl-gpt-4o-mini']);

    // No models setting: every configured route but "*"; the config's list for development.
    const open = await newProject(gw, {});
    assert.deepEqual((await limits(gw, open.name)).data.map((l) => l.model).sort(), [...ALL_MODELS].sort());
    assert.deepEqual((await limits(gw, 'development')).data.map((l) => l.model).sort(), [...DEV_MODELS].sort());
});

test('set: a partial POST changes only the members it names; each change is a version and an audit entry', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini', 'mock-small'] });
    const v0 = await versionCount(gw, p.id);

    const first = await ok(setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 500, max_tokens_per_1_minute: 200000 }));
    assert.deepEqual(first, {
        object: 'project.rate_limit', id: 'rl-gpt-4o-mini', model: 'gpt-4o-mini',
        max_requests_per_1_minute: 500, max_tokens_per_1_minute: 200000, max_requests_per_1_day: null, max_tokens_per_1_day: null,
    });
    const second = await ok(setLimit(gw, p.name, 'gpt-4o-mini', { max_requests_per_1_day: 10000, max_requests_per_1_minute: 300 }));
    assert.equal(second.max_tokens_per_1_minute, 200000, 'members not named are kept');
    assert.equal(second.max_requests_per_1_minute, 300);
    assert.equal(second.max_requests_per_1_day, 10000);

    const list = await limits(gw, p.id);
    assert.deepEqual(list.data.find((l) => l.model === 'gpt-4o-mini'), second, 'read back as answered');
    assert.equal(list.data.find((l) => l.model === 'mock-small').max_requests_per_1_minute, null, 'other models untouched');

    assert.equal(await versionCount(gw, p.id), v0 + 2);
    const [newest] = (await ok(gw.adminFetch(`/v1/organization/config_versions?project_id=${p.id}&limit=1`))).data;
    assert.equal(newest.reason, 'rate_limit.updated');
    assert.deepEqual(newest.settings.rate_limits, {
        'gpt-4o-mini': { max_requests_per_1_day: 10000, max_requests_per_1_minute: 300, max_tokens_per_1_minute: 200000 },
    });
    assert.deepEqual(newest.settings.models, ['gpt-4o-mini', 'mock-small'], 'the rest of the settings kept');

    const audit = await ok(gw.adminFetch(`/v1/organization/audit_logs?event_types[]=rate_limit.updated&project_ids[]=${p.id}`));
    assert.equal(audit.data.length, 2);
    assert.deepEqual(audit.data[0]['rate_limit.updated'], {
        id: 'rl-gpt-4o-mini',
        changes_requested: { max_requests_per_1_minute: 300, max_requests_per_1_day: 10000 },
    });
    assert.equal(audit.data[0].project.id, p.id);
    assert.match(audit.data[0].actor.api_key.id, /^key_/);

    // The same values again change nothing: no version, no entry.
    await ok(setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 300 }));
    await ok(setLimit(gw, p.id, 'mock-small', {}));
    assert.equal(await versionCount(gw, p.id), v0 + 2);

    // Removing every limit of a model is a deletion; the settings lose the member.
    const cleared = await ok(setLimit(gw, p.id, 'gpt-4o-mini', Object.fromEntries(FIELDS.map((f) => [f, null]))));
    for (const f of FIELDS) assert.equal(cleared[f], null);
    const del = await ok(gw.adminFetch(`/v1/organization/audit_logs?event_types[]=rate_limit.deleted&project_ids[]=${p.id}`));
    assert.equal(del.data.length, 1);
    assert.equal(del.data[0]['rate_limit.deleted'].id, 'rl-gpt-4o-mini');
    assert.equal(del.data[0].before.max_requests_per_1_minute, 300);
    const [last] = (await ok(gw.adminFetch(`/v1/organization/config_versions?project_id=${p.id}&limit=1`))).data;
    assert.equal(last.reason, 'rate_limit.deleted');
    assert.equal(last.settings.rate_limits, undefined);
});

test('limits outlive the model list: a model left out of models still shows while it has limits', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini', 'mock-small'] });
    await ok(setLimit(gw, p.id, 'mock-small', { max_tokens_per_1_day: 1000000 }));
    await ok(gw.adminFetch(`/v1/organization/projects/${p.id}`, { body: { models: ['gpt-4o-mini'] } }));
    assert.deepEqual((await limits(gw, p.id)).data.map((l) => l.id), ['rl-gpt-4o-mini', 'rl-mock-small']);
    await ok(setLimit(gw, p.id, 'mock-small', { max_tokens_per_1_day: null }));
    assert.deepEqual((await limits(gw, p.id)).data.map((l) => l.id), ['rl-gpt-4o-mini']);
    assert.equal((await setLimit(gw, p.id, 'mock-small', { max_tokens_per_1_day: 5 })).status, 404, 'no longer the project\'s');
});

test('rollback restores earlier limits at once, as a new version', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini'] });
    await ok(setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 100 }));
    const [v] = (await ok(gw.adminFetch(`/v1/organization/config_versions?project_id=${p.id}&limit=1`))).data;
    await ok(setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 5, max_tokens_per_1_day: 50 }));

    const diff = await ok(gw.adminFetch(`/v1/organization/config_versions/diff?from=${v.number}&to=${v.number + 1}`));
    assert.ok(diff.changes.length > 0, JSON.stringify(diff));
    const rb = await ok(gw.adminFetch(`/v1/organization/config_versions/${v.number}/rollback`, { method: 'POST', body: {} }));
    assert.deepEqual(rb.settings.rate_limits, { 'gpt-4o-mini': { max_requests_per_1_minute: 100 } });
    const [l] = (await limits(gw, p.id)).data;
    assert.equal(l.max_requests_per_1_minute, 100);
    assert.equal(l.max_tokens_per_1_day, null);
});

test('export holds the limits and apply round-trips them', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini', 'mock-small'] });
    await ok(setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 60, max_tokens_per_1_day: 1000000 }));
    const first = await exportYaml(gw);
    // Edits of this project's entry only (earlier tests' projects have limits too).
    const start = first.indexOf(`- name: ${p.name}\n`);
    const edit = (from, to) => first.slice(0, start) + first.slice(start).replace(from, to);
    assert.ok(
        first.includes(`- name: ${p.name}\n  environment: development\n  archived: false\n  settings:\n    models: [gpt-4o-mini, mock-small]\n` +
            '    rate_limits:\n      gpt-4o-mini:\n        max_requests_per_1_minute: 60\n        max_tokens_per_1_day: 1000000\n'),
        first,
    );
    const same = await apply(gw, first);
    assert.equal(same.status, 200, same.text);
    assert.deepEqual(same.json.changes, [], 'applying an export of the same state changes nothing');

    await ok(setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: null }));
    await ok(setLimit(gw, p.id, 'mock-small', { max_requests_per_1_minute: 7 }));
    const back = await apply(gw, first);
    assert.equal(back.status, 200, back.text);
    assert.deepEqual(back.json.changes.map((c) => `${c.action} ${c.kind} ${c.name}`), [`update project ${p.name}`]);
    const list = await limits(gw, p.id);
    assert.equal(list.data.find((l) => l.model === 'gpt-4o-mini').max_requests_per_1_minute, 60);
    assert.equal(list.data.find((l) => l.model === 'mock-small').max_requests_per_1_minute, null);
    assert.equal(await exportYaml(gw), first, 'export again equals the first file');

    // A file that sets limits where there were none.
    const fresh = edit('    rate_limits:\n      gpt-4o-mini:\n', '    rate_limits:\n      mock-small:\n        max_tokens_per_1_minute: 0\n      gpt-4o-mini:\n');
    assert.equal((await apply(gw, fresh)).status, 200);
    assert.equal((await limits(gw, p.id)).data.find((l) => l.model === 'mock-small').max_tokens_per_1_minute, 0);
    assert.equal((await apply(gw, first)).status, 200);

    const at = first.slice(0, first.indexOf('max_requests_per_1_minute: 60', first.indexOf(`- name: ${p.name}\n`))).split('\n').length;
    for (const [what, yaml, re] of [
        ['negative', edit('max_requests_per_1_minute: 60', 'max_requests_per_1_minute: -1'), new RegExp(`line ${at}\\b.*max_requests_per_1_minute`)],
        ['a string', edit('max_requests_per_1_minute: 60', 'max_requests_per_1_minute: lots'), /max_requests_per_1_minute/],
        ['a fraction', edit('max_requests_per_1_minute: 60', 'max_requests_per_1_minute: 1.5'), /max_requests_per_1_minute/],
        ['unknown member', edit('max_requests_per_1_minute: 60', 'max_images_per_1_minute: 60'), new RegExp(`line ${at}\\b.*max_images_per_1_minute`)],
        ['not a mapping', edit(/    rate_limits:\n(.*\n){3}/, '    rate_limits: [gpt-4o-mini]\n'), /rate_limits/],
        ['a model with no limit', edit(/      gpt-4o-mini:\n(.*\n){2}/, '      gpt-4o-mini: {}\n'), /names no limit/],
    ]) {
        assert.notEqual(yaml, first, what);
        const r = await apply(gw, yaml);
        assert.equal(r.status, 400, `${what}: ${r.text}`);
        assert.match(r.json.error.message, re, what);
    }
    assert.equal(await exportYaml(gw), first, 'nothing was applied');
});

test('readers may list a project\'s limits they are a member of, but not change them (403)', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini'] });
    const inv = await ok(gw.adminFetch('/v1/organization/invites', {
        body: { email: `${uniqueName('reader')}@example.com`, role: 'reader', projects: [{ id: p.id, role: 'owner' }] },
    }));
    const acc = await ok(gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.token } }));
    const reader = acc.admin_api_key.value;
    gw.clientKeys.push(reader);

    const list = await gw.adminFetch(`/v1/organization/projects/${p.id}/rate_limits`, { key: reader });
    assert.equal(list.status, 200, list.text);
    const denied = await setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 1 }, reader);
    assert.equal(denied.status, 403, denied.text);
    assert.equal(denied.json.error.code, 'insufficient_role');
    const projectKey = await gw.createKey(p.id, 'rl');
    assert.ok([401, 403].includes((await setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 1 }, projectKey)).status));
    assert.equal((await limits(gw, p.id)).data[0].max_requests_per_1_minute, null, 'nothing changed');
});

test('bad input: 400 naming the field, 404 for an unknown id, nothing applied', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini'] });
    await ok(setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 10 }));
    const v0 = await versionCount(gw, p.id);
    for (const [body, param, code] of [
        [{ max_images_per_1_minute: 1 }, 'max_images_per_1_minute', 'unknown_parameter'],
        [{ max_requests_per_1_minute: -1 }, 'max_requests_per_1_minute', 'invalid_value'],
        [{ max_requests_per_1_minute: 2 ** 53 }, 'max_requests_per_1_minute', 'invalid_value'],
        [{ max_tokens_per_1_minute: '100' }, 'max_tokens_per_1_minute', 'invalid_type'],
        [{ max_tokens_per_1_day: 1.5 }, 'max_tokens_per_1_day', 'invalid_type'],
        [{ max_requests_per_1_day: true }, 'max_requests_per_1_day', 'invalid_type'],
        [{ max_requests_per_1_minute: 20, max_tokens_per_1_minute: {} }, 'max_tokens_per_1_minute', 'invalid_type'],
    ]) {
        const r = await setLimit(gw, p.id, 'gpt-4o-mini', body);
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        assert.equal(r.json.error.type, 'invalid_request_error');
        assert.equal(r.json.error.param, param);
        assert.equal(r.json.error.code, code);
    }
    const notJson = await gw.adminFetch(`/v1/organization/projects/${p.id}/rate_limits/rl-gpt-4o-mini`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: '[1]',
    });
    assert.equal(notJson.status, 400, notJson.text);
    for (const id of ['rl-mock-small', 'rl-nope', 'gpt-4o-mini', 'rl-']) {
        const r = await gw.adminFetch(`/v1/organization/projects/${p.id}/rate_limits/${id}`, { body: { max_requests_per_1_minute: 1 } });
        assert.equal(r.status, 404, `${id}: ${r.text}`);
        assert.equal(r.json.error.param, 'rate_limit_id');
    }
    assert.equal((await gw.adminFetch('/v1/organization/projects/proj_nope/rate_limits')).status, 404);
    assert.equal((await limits(gw, p.id)).data[0].max_requests_per_1_minute, 10, 'nothing changed');
    assert.equal(await versionCount(gw, p.id), v0, 'no version for a refused change');

    await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/archive`, { method: 'POST', body: {} }));
    const archived = await setLimit(gw, p.id, 'gpt-4o-mini', { max_requests_per_1_minute: 1 });
    assert.equal(archived.status, 400, archived.text);
    assert.equal(archived.json.error.code, 'project_archived');
});

// Runs `tollgate ARGS` against the gateway; never throws on a non-zero exit.
async function tg(args, key) {
    const env = { ...process.env, TOLLGATE_URL: ctx.gw.url, TOLLGATE_ADMIN_KEY: key ?? ctx.gw.adminKey };
    try {
        const { stdout, stderr } = await promisify(execFile)(process.env.TOLLGATE_BIN, args, { env });
        return { code: 0, stdout, stderr };
    } catch (e) {
        if (typeof e.code !== 'number') throw e;
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
}

test('CLI: rate-limits list shows the table, set changes and removes limits', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini', 'mock-small'] });
    const set = await tg(['rate-limits', 'set', '--project', p.name, '--model', 'gpt-4o-mini', '--rpm', '500', '--tpd', '2000000']);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /^model\s+requests\/min\s+tokens\/min\s+requests\/day\s+tokens\/day\n/);
    assert.match(set.stdout, /\ngpt-4o-mini\s+500\s+-\s+-\s+2000000\n$/);

    const list = await tg(['rate-limits', 'list', '--project', p.id]);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(list.stdout.trim().split('\n').slice(1).map((l) => l.split(/\s+/)), [
        ['gpt-4o-mini', '500', '-', '-', '2000000'],
        ['mock-small', '-', '-', '-', '-'],
    ]);
    const json = await tg(['--json', 'rate-limits', 'set', '--project', p.id, '--model', 'gpt-4o-mini', '--rpm', 'none']);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout).max_requests_per_1_minute, null);
    assert.equal(JSON.parse(json.stdout).max_tokens_per_1_day, 2000000);
    assert.equal((await limits(gw, p.id)).data[0].max_requests_per_1_minute, null);

    for (const [args, code, re] of [
        [['--model', 'gpt-4o-mini', '--rpm', '-1'], 2, /--rpm/],
        [['--model', 'gpt-4o-mini'], 2, /at least one/],
        [['--model', 'nope', '--rpm', '1'], 1, /404/],
    ]) {
        const r = await tg(['rate-limits', 'set', '--project', p.id, ...args]);
        assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, re);
    }
});

shutdownTest(ctx);
