// budgets.test.mjs: budgets and rate limits at the three levels in the admin API: the default
// $100 organization budget of a fresh gateway, set and read back at organization, project and
// key level (partial updates, null restoring defaults), bad input refused naming the member
// with nothing applied, owners only, a config version (projects) and an audit entry per
// change, export/apply round-tripping project budgets and the organization's budget and rate
// limits (key settings stay out of the file), org and key rate limits with the all-models
// entry, and the CLI's `budgets` and `rate-limits` at every level.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';

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

const ORG = '/v1/organization';

function newProject(gw, body = {}) {
    return ok(gw.adminFetch(`${ORG}/projects`, { body: { name: uniqueName('bud'), ...body } }));
}

async function versionCount(gw, project) {
    return (await ok(gw.adminFetch(`${ORG}/config_versions?project_id=${project}&limit=100`))).data.length;
}

async function auditOf(gw, type, query = '') {
    return (await ok(gw.adminFetch(`${ORG}/audit_logs?event_types[]=${type}&limit=100${query}`))).data;
}

async function newReader(gw, projects = []) {
    const inv = await ok(gw.adminFetch(`${ORG}/invites`, {
        body: { email: `${uniqueName('reader')}@example.com`, role: 'reader', projects },
    }));
    const acc = await ok(gw.adminFetch(`${ORG}/invites/accept`, { key: null, body: { token: inv.token } }));
    gw.clientKeys.push(acc.admin_api_key.value);
    return acc.admin_api_key.value;
}

async function keyIdOf(gw, project, name) {
    const value = await gw.createKey(project, name);
    const list = await ok(gw.adminFetch(`${ORG}/projects/${project}/api_keys?limit=100`));
    const k = list.data.find((x) => x.name === name);
    assert.ok(k, JSON.stringify(list));
    return { id: k.id, value };
}

test('a fresh gateway: the organization has a $100 monthly budget, and its spend this month', T, async () => {
    const { gw } = ctx;
    const b = await ok(gw.adminFetch(`${ORG}/budget`));
    assert.equal(b.object, 'organization.budget');
    assert.equal(b.scope, 'organization');
    assert.match(b.scope_id, /^org-/);
    assert.equal(b.project_id, null);
    assert.deepEqual(b.monthly_limit, { value: '100.000000', currency: 'usd' });
    assert.equal(b.monthly_limit_micros, 100000000);
    assert.deepEqual(b.thresholds_pct, [50, 80, 100]);
    assert.equal(b.auto_increase, null);
    assert.equal(b.on_exceed, 'refuse');
    assert.equal(b.max_tokens_cap, 4096);
    assert.equal(b.max_n, 8);
    assert.deepEqual(b.notify_emails, []);
    assert.equal(b.webhook_url, null);
    assert.equal(b.webhook_secret, null);
    assert.equal(typeof b.spend_micros, 'number');
    assert.ok(b.spend_micros >= 0);
    assert.equal(b.spend.currency, 'usd');
    const now = Date.now() / 1000;
    assert.ok(b.period_start <= now && now < b.period_end, JSON.stringify(b));
    const start = new Date(b.period_start * 1000);
    assert.equal(start.getUTCDate(), 1, 'a calendar month, UTC by default');
    assert.equal(start.getUTCHours(), 0);
    // A project has no budget until one is set.
    const p = await newProject(gw);
    const pb = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`));
    assert.equal(pb.scope, 'project');
    assert.equal(pb.scope_id, p.id);
    assert.equal(pb.monthly_limit, null);
    assert.equal(pb.monthly_limit_micros, null);
});

test('project budget: set, read back, partial updates, null restores defaults; a version and an audit entry each', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini'] });
    const v0 = await versionCount(gw, p.id);
    const set = await ok(gw.adminFetch(`${ORG}/projects/${p.name}/budget`, {
        body: {
            monthly_limit: { value: '12.5', currency: 'usd' },
            thresholds_pct: [25, 90],
            auto_increase: { at_pct: 90, by_micros: 5000000, max_micros: 50000000 },
            on_exceed: 'lower_max_tokens',
            notify_emails: ['ops@example.com'],
            webhook_url: 'https://hooks.example.com/x',
            webhook_secret: 'env:BUDGET_HOOK_SECRET',
        },
    }));
    assert.deepEqual(set.monthly_limit, { value: '12.500000', currency: 'usd' });
    assert.equal(set.monthly_limit_micros, 12500000);
    assert.deepEqual(set.thresholds_pct, [25, 90]);
    assert.deepEqual(set.auto_increase, { at_pct: 90, by_micros: 5000000, max_micros: 50000000 });
    assert.equal(set.on_exceed, 'lower_max_tokens');
    assert.equal(set.webhook_secret, 'env:BUDGET_HOOK_SECRET', 'the reference, as stored');
    const read = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`));
    assert.deepEqual({ ...read, spend: 0, spend_micros: 0 }, { ...set, spend: 0, spend_micros: 0 });

    const partial = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`, { body: { max_n: 2, monthly_limit: '20' } }));
    assert.equal(partial.max_n, 2);
    assert.equal(partial.monthly_limit_micros, 20000000);
    assert.deepEqual(partial.thresholds_pct, [25, 90], 'members not named are kept');
    const reset = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`, {
        body: { thresholds_pct: null, on_exceed: null, auto_increase: null, monthly_limit_micros: 7 },
    }));
    assert.deepEqual(reset.thresholds_pct, [50, 80, 100]);
    assert.equal(reset.on_exceed, 'refuse');
    assert.equal(reset.auto_increase, null);
    assert.equal(reset.monthly_limit_micros, 7);
    assert.deepEqual(reset.monthly_limit, { value: '0.000007', currency: 'usd' });

    assert.equal(await versionCount(gw, p.id), v0 + 3);
    const [newest] = (await ok(gw.adminFetch(`${ORG}/config_versions?project_id=${p.id}&limit=1`))).data;
    assert.equal(newest.reason, 'budget.updated');
    assert.deepEqual(newest.settings.models, ['gpt-4o-mini'], 'the rest of the settings kept');
    assert.equal(newest.settings.budget.monthly_limit_micros, 7);
    assert.equal(newest.settings.budget.max_n, 2);
    const entries = await auditOf(gw, 'budget.updated', `&project_ids[]=${p.id}`);
    assert.equal(entries.length, 3);
    assert.equal(entries[0].project.id, p.id);
    assert.deepEqual(entries[0]['budget.updated'].changes_requested.monthly_limit_micros, 7);

    // The same values again change nothing: no version, no entry.
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`, { body: { monthly_limit_micros: 7 } }));
    assert.equal(await versionCount(gw, p.id), v0 + 3);
    assert.equal((await auditOf(gw, 'budget.updated', `&project_ids[]=${p.id}`)).length, 3);

    // Removing every member removes the budget.
    const gone = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`, {
        body: { monthly_limit_micros: null, max_n: null, notify_emails: null, webhook_url: null, webhook_secret: null },
    }));
    assert.equal(gone.monthly_limit, null);
    const [last] = (await ok(gw.adminFetch(`${ORG}/config_versions?project_id=${p.id}&limit=1`))).data;
    assert.equal(last.settings.budget, undefined);
});

test('organization and key budgets: set and read back, audited, no config version', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw);
    const v0 = await versionCount(gw, p.id);
    const k = await keyIdOf(gw, p.id, uniqueName('bk'));
    const kb = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/api_keys/${k.id}/budget`, { body: { monthly_limit: '1.25' } }));
    assert.equal(kb.scope, 'key');
    assert.equal(kb.scope_id, k.id);
    assert.equal(kb.project_id, p.id);
    assert.equal(kb.monthly_limit_micros, 1250000);
    assert.equal((await ok(gw.adminFetch(`${ORG}/projects/${p.id}/api_keys/${k.id}/budget`))).monthly_limit_micros, 1250000);
    const other = await newProject(gw);
    assert.equal((await gw.adminFetch(`${ORG}/projects/${other.id}/api_keys/${k.id}/budget`)).status, 404, 'the key is not that project\'s');
    assert.equal((await gw.adminFetch(`${ORG}/projects/${p.id}/api_keys/key_nope/budget`)).status, 404);
    assert.equal(await versionCount(gw, p.id), v0, 'key settings are not project versions');
    const keyEntries = (await auditOf(gw, 'budget.updated')).filter((e) => e['budget.updated'].id === k.id);
    assert.equal(keyEntries.length, 1);

    const before = await ok(gw.adminFetch(`${ORG}/budget`));
    const ob = await ok(gw.adminFetch(`${ORG}/budget`, { body: { monthly_limit: { value: '250' }, notify_emails: ['cfo@example.com'] } }));
    assert.equal(ob.monthly_limit_micros, 250000000);
    assert.deepEqual(ob.notify_emails, ['cfo@example.com']);
    const orgEntries = (await auditOf(gw, 'budget.updated')).filter((e) => e['budget.updated'].id === before.scope_id);
    assert.ok(orgEntries.length >= 1);
    assert.equal(orgEntries[0].project, undefined);
    // Back to what it was, so other tests see the default.
    await ok(gw.adminFetch(`${ORG}/budget`, { body: { monthly_limit_micros: before.monthly_limit_micros, notify_emails: null } }));
    assert.equal((await ok(gw.adminFetch(`${ORG}/budget`))).monthly_limit_micros, 100000000);
});

test('bad input: 400 naming the member, nothing applied', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw);
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`, { body: { monthly_limit_micros: 5000000 } }));
    const v0 = await versionCount(gw, p.id);
    for (const [body, param] of [
        [{ monthly_limit_micros: -1 }, 'monthly_limit_micros'],
        [{ monthly_limit_micros: 1e13 }, 'monthly_limit_micros'],
        [{ monthly_limit_micros: 1.5 }, 'monthly_limit_micros'],
        [{ monthly_limit: '12.1234567' }, 'monthly_limit'],
        [{ monthly_limit: '-3' }, 'monthly_limit'],
        [{ monthly_limit: { value: '3', currency: 'eur' } }, 'monthly_limit'],
        [{ monthly_limit: '3', monthly_limit_micros: 3 }, 'monthly_limit'],
        [{ thresholds_pct: [80, 50] }, 'thresholds_pct'],
        [{ thresholds_pct: [50, 50] }, 'thresholds_pct'],
        [{ thresholds_pct: [0] }, 'thresholds_pct'],
        [{ thresholds_pct: [1001] }, 'thresholds_pct'],
        [{ auto_increase: { at_pct: 80, by_micros: 1 } }, 'max_micros'],
        [{ auto_increase: { at_pct: 80, by_micros: 1, max_micros: 10 } }, 'max_micros'],
        [{ on_exceed: 'warn' }, 'on_exceed'],
        [{ max_n: 0 }, 'max_n'],
        [{ max_tokens_cap: -5 }, 'max_tokens_cap'],
        [{ notify_emails: ['nope'] }, 'notify_emails'],
        [{ webhook_url: 'ftp://x' }, 'webhook_url'],
        [{ webhook_secret: 'plain-secret-value' }, 'webhook_secret'],
        [{ monthly_limit_usd: 5 }, 'monthly_limit_usd'],
    ]) {
        const r = await gw.adminFetch(`${ORG}/projects/${p.id}/budget`, { body });
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        assert.equal(r.json.error.type, 'invalid_request_error');
        assert.equal(r.json.error.param, param, `${JSON.stringify(body)}: ${r.text}`);
        assert.ok(!r.text.includes('plain-secret-value'), 'an inline secret is never echoed');
    }
    assert.equal((await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`))).monthly_limit_micros, 5000000);
    assert.equal(await versionCount(gw, p.id), v0, 'no version for a refused change');
    assert.equal((await gw.adminFetch(`${ORG}/projects/proj_nope/budget`)).status, 404);
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/archive`, { method: 'POST', body: {} }));
    const archived = await gw.adminFetch(`${ORG}/projects/${p.id}/budget`, { body: { max_n: 1 } });
    assert.equal(archived.status, 400);
    assert.equal(archived.json.error.code, 'project_archived');
});

test('owners only change budgets and limits; readers read their projects\' and the org\'s', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw);
    const reader = await newReader(gw, [{ id: p.id, role: 'owner' }]);
    const k = await keyIdOf(gw, p.id, uniqueName('rk'));
    for (const path of [`${ORG}/budget`, `${ORG}/projects/${p.id}/budget`, `${ORG}/projects/${p.id}/api_keys/${k.id}/budget`,
        `${ORG}/rate_limits`, `${ORG}/projects/${p.id}/api_keys/${k.id}/rate_limits`]) {
        assert.equal((await gw.adminFetch(path, { key: reader })).status, 200, path);
    }
    for (const [path, body] of [
        [`${ORG}/budget`, { monthly_limit: '1' }],
        [`${ORG}/projects/${p.id}/budget`, { monthly_limit: '1' }],
        [`${ORG}/projects/${p.id}/api_keys/${k.id}/budget`, { monthly_limit: '1' }],
        [`${ORG}/rate_limits/rl-all-models`, { max_requests_per_1_minute: 1 }],
        [`${ORG}/projects/${p.id}/api_keys/${k.id}/rate_limits/rl-all-models`, { max_requests_per_1_minute: 1 }],
    ]) {
        const r = await gw.adminFetch(path, { key: reader, body });
        assert.equal(r.status, 403, `${path}: ${r.text}`);
        assert.equal(r.json.error.code, 'insufficient_role');
    }
    const outsider = await newReader(gw, []);
    assert.equal((await gw.adminFetch(`${ORG}/projects/${p.id}/budget`, { key: outsider })).status, 403);
    assert.ok([401, 403].includes((await gw.adminFetch(`${ORG}/budget`, { key: k.value })).status), 'a project key is no admin key');
    assert.equal((await ok(gw.adminFetch(`${ORG}/budget`))).monthly_limit_micros, 100000000, 'nothing changed');
});

test('rate limits of the organization and of a key, and the all-models entry at every level', T, async () => {
    const { gw } = ctx;
    const org = await ok(gw.adminFetch(`${ORG}/rate_limits?limit=100`));
    assert.ok(org.data.every((l) => l.object === 'organization.rate_limit'));
    assert.ok(org.data.some((l) => l.id === 'rl-gpt-4o-mini'));
    const all = await ok(gw.adminFetch(`${ORG}/rate_limits/rl-all-models`, { body: { max_requests_per_1_day: 90000000 } }));
    assert.deepEqual(all, {
        object: 'organization.rate_limit', id: 'rl-all-models', model: '*',
        max_requests_per_1_minute: null, max_tokens_per_1_minute: null, max_requests_per_1_day: 90000000, max_tokens_per_1_day: null,
    });
    assert.equal((await ok(gw.adminFetch(`${ORG}/rate_limits?limit=100`))).data[0].id, 'rl-all-models', 'listed first once set');
    const entry = (await auditOf(gw, 'rate_limit.updated')).find((e) => e['rate_limit.updated'].id === 'rl-all-models');
    assert.ok(entry, 'audited');
    await ok(gw.adminFetch(`${ORG}/rate_limits/rl-all-models`, { body: { max_requests_per_1_day: null } }));
    assert.notEqual((await ok(gw.adminFetch(`${ORG}/rate_limits?limit=100`))).data[0].id, 'rl-all-models');

    const p = await newProject(gw, { models: ['gpt-4o-mini', 'mock-small'] });
    const k = await keyIdOf(gw, p.id, uniqueName('rl'));
    const base = `${ORG}/projects/${p.id}/api_keys/${k.id}/rate_limits`;
    assert.deepEqual((await ok(gw.adminFetch(base))).data.map((l) => l.id), ['rl-gpt-4o-mini', 'rl-mock-small']);
    const kl = await ok(gw.adminFetch(`${base}/rl-mock-small`, { body: { max_tokens_per_1_minute: 1000 } }));
    assert.equal(kl.object, 'project.api_key.rate_limit');
    assert.equal(kl.max_tokens_per_1_minute, 1000);
    const keyEntry = (await auditOf(gw, 'rate_limit.updated', `&project_ids[]=${p.id}`))[0];
    assert.equal(keyEntry['rate_limit.updated'].id, `${k.id}/rl-mock-small`);
    assert.equal((await gw.adminFetch(`${base}/rl-o3`, { body: { max_tokens_per_1_minute: 1 } })).status, 404);
    assert.equal((await gw.adminFetch(`${base}/rl-all-models`, { body: { max_tokens_per_1_minute: 1e13 } })).status, 400);

    // The project level takes the all-models entry too; it is a config version like the others.
    const v0 = await versionCount(gw, p.id);
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/rate_limits/rl-all-models`, { body: { max_requests_per_1_minute: 100 } }));
    assert.equal(await versionCount(gw, p.id), v0 + 1);
    const list = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/rate_limits`));
    assert.deepEqual(list.data.map((l) => l.id), ['rl-all-models', 'rl-gpt-4o-mini', 'rl-mock-small']);
    assert.equal(list.data[0].model, '*');
});

test('export holds project budgets and the all-models limit; apply round-trips them', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, { models: ['gpt-4o-mini'] });
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`, {
        body: { monthly_limit: '42', thresholds_pct: [50, 100], webhook_secret: 'env:HOOK' },
    }));
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/rate_limits/rl-all-models`, { body: { max_requests_per_1_minute: 60 } }));
    const exp = await gw.adminFetch(`${ORG}/export`);
    assert.equal(exp.status, 200, exp.text);
    const first = exp.text;
    const start = first.indexOf(`- name: ${p.name}\n`);
    assert.ok(start >= 0, first);
    const next = first.indexOf('\n- name:', start + 1);
    const mine = first.slice(start, next < 0 ? undefined : next);
    assert.match(mine, /budget:\n\s+monthly_limit_micros: 42000000\n\s+thresholds_pct: \[50, 100\]\n\s+webhook_secret: env:HOOK\n/);
    assert.match(mine, /'\*':\n\s+max_requests_per_1_minute: 60\n/);
    const apply = (yaml) => gw.adminFetch(`${ORG}/apply?dry_run=false`, {
        method: 'POST', headers: { 'content-type': 'application/yaml' }, body: yaml,
    });
    const same = await apply(first);
    assert.equal(same.status, 200, same.text);
    assert.deepEqual(same.json.changes, []);

    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`, { body: { monthly_limit: '1', thresholds_pct: null } }));
    const back = await apply(first);
    assert.equal(back.status, 200, back.text);
    assert.deepEqual(back.json.changes.map((c) => `${c.action} ${c.kind} ${c.name}`), [`update project ${p.name}`]);
    const b = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`));
    assert.equal(b.monthly_limit_micros, 42000000);
    assert.deepEqual(b.thresholds_pct, [50, 100]);
    assert.equal((await gw.adminFetch(`${ORG}/export`)).text, first, 'export again equals the first file');

    const edit = (from, to) => first.slice(0, start) + first.slice(start).replace(from, to);
    for (const [what, yaml, re] of [
        ['descending thresholds', edit('thresholds_pct: [50, 100]', 'thresholds_pct: [100, 50]'), /line \d+.*thresholds_pct/],
        ['an inline secret', edit('webhook_secret: env:HOOK', 'webhook_secret: hunter2'), /line \d+.*webhook_secret/],
        ['an unknown member', edit('monthly_limit_micros: 42000000', 'monthly_usd: 42'), /line \d+.*monthly_usd/],
    ]) {
        assert.notEqual(yaml, first, what);
        const r = await apply(yaml);
        assert.equal(r.status, 400, `${what}: ${r.text}`);
        assert.match(r.json.error.message, re, what);
        assert.ok(!r.text.includes('hunter2'));
    }
    assert.equal((await gw.adminFetch(`${ORG}/export`)).text, first, 'nothing was applied');
});

test('export holds the organization budget and rate limits; apply of an old export restores them', T, async () => {
    const { gw } = ctx;
    const apply = (yaml, dry = false) => gw.adminFetch(`${ORG}/apply?dry_run=${dry}`, {
        method: 'POST', headers: { 'content-type': 'application/yaml' }, body: yaml,
    });
    const exportYaml = async () => {
        const r = await gw.adminFetch(`${ORG}/export`);
        assert.equal(r.status, 200, r.text);
        return r.text;
    };
    const orig = await exportYaml();
    assert.match(orig, /^version: 1\norganization:\n {2}budget:\n {4}monthly_limit_micros: \d+\n/, orig);
    // A known state: limits high enough not to touch the other tests' requests.
    await ok(gw.adminFetch(`${ORG}/budget`, { body: { monthly_limit: '250', thresholds_pct: [50, 100] } }));
    await ok(gw.adminFetch(`${ORG}/rate_limits/rl-all-models`, { body: { max_requests_per_1_minute: 100000 } }));
    const first = await exportYaml();
    assert.ok(first.startsWith('version: 1\norganization:\n  budget:\n    monthly_limit_micros: 250000000\n' +
        "    thresholds_pct: [50, 100]\n  rate_limits:\n    '*':\n      max_requests_per_1_minute: 100000\nusers:\n"), first);
    for (const dry of [true, false]) {
        const same = await apply(first, dry);
        assert.equal(same.status, 200, same.text);
        assert.deepEqual(same.json.changes, [], 'an export of the same state changes nothing');
    }

    // Key settings are not in the file: a key's budget changes nothing in the export.
    const p = await newProject(gw, { models: ['gpt-4o-mini'] });
    const k = await keyIdOf(gw, p.id, uniqueName('orgexp'));
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/api_keys/${k.id}/budget`, { body: { monthly_limit: '3' } }));
    const withProject = await exportYaml();
    assert.ok(!withProject.includes('3000000'), withProject);
    assert.ok(!withProject.includes(k.id) && !withProject.includes(k.value));

    // Change the organization's settings through the API.
    await ok(gw.adminFetch(`${ORG}/budget`, { body: { monthly_limit: '7', thresholds_pct: null } }));
    await ok(gw.adminFetch(`${ORG}/rate_limits/rl-all-models`, { body: { max_requests_per_1_minute: null } }));
    await ok(gw.adminFetch(`${ORG}/rate_limits/rl-gpt-4o-mini`, { body: { max_tokens_per_1_day: 900000000 } }));
    const budgetAudits = (await auditOf(gw, 'budget.updated')).length;
    const limitAudits = (await auditOf(gw, 'rate_limit.updated')).length + (await auditOf(gw, 'rate_limit.deleted')).length;

    const expected = [
        ['update', 'budget', 'organization'],
        ['create', 'rate_limit', 'organization/rl-all-models'],
        ['delete', 'rate_limit', 'organization/rl-gpt-4o-mini'],
    ];
    const dry = await apply(withProject, true);
    assert.equal(dry.status, 200, dry.text);
    assert.deepEqual(dry.json.changes.map((c) => [c.action, c.kind, c.name]), expected, 'the dry run lists the change');
    assert.deepEqual(dry.json.changes[0].before, { monthly_limit_micros: 7000000 });
    assert.deepEqual(dry.json.changes[0].after, { monthly_limit_micros: 250000000, thresholds_pct: [50, 100] });
    assert.equal(dry.json.changes[1].after.max_requests_per_1_minute, 100000);
    assert.equal(dry.json.changes[2].before.max_tokens_per_1_day, 900000000);
    assert.equal(dry.json.changes[2].after, null);
    assert.equal((await ok(gw.adminFetch(`${ORG}/budget`))).monthly_limit_micros, 7000000, 'a dry run changes nothing');
    assert.equal((await auditOf(gw, 'budget.updated')).length, budgetAudits);

    const applied = await apply(withProject);
    assert.equal(applied.status, 200, applied.text);
    assert.deepEqual(applied.json.changes, dry.json.changes);
    const b = await ok(gw.adminFetch(`${ORG}/budget`));
    assert.equal(b.monthly_limit_micros, 250000000);
    assert.deepEqual(b.thresholds_pct, [50, 100]);
    const rl = await ok(gw.adminFetch(`${ORG}/rate_limits`));
    assert.equal(rl.data.find((l) => l.id === 'rl-all-models')?.max_requests_per_1_minute, 100000);
    assert.equal(rl.data.find((l) => l.id === 'rl-gpt-4o-mini')?.max_tokens_per_1_day, null);
    const kb = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/api_keys/${k.id}/budget`));
    assert.equal(kb.monthly_limit_micros, 3000000, 'the key budget stays as it is');
    // One audit entry per change, as the admin routes write them.
    const audits = await auditOf(gw, 'budget.updated');
    assert.equal(audits.length, budgetAudits + 1);
    assert.equal(audits[0].after.monthly_limit_micros, 250000000);
    assert.equal((await auditOf(gw, 'rate_limit.updated')).length + (await auditOf(gw, 'rate_limit.deleted')).length, limitAudits + 2);
    assert.equal(await exportYaml(), withProject, 'export again equals the old export');
    assert.deepEqual((await apply(withProject)).json.changes, []);

    // Bad organization settings are refused naming the line, and nothing is applied.
    const lines = withProject.split('\n');
    const at = lines.indexOf('    thresholds_pct: [50, 100]') + 1;
    for (const [what, yaml, re] of [
        ['descending thresholds', withProject.replace('thresholds_pct: [50, 100]', 'thresholds_pct: [100, 50]'), new RegExp(`line ${at}\\b.*organization\\.budget\\.thresholds_pct`)],
        ['a negative limit', withProject.replace('max_requests_per_1_minute: 100000', 'max_requests_per_1_minute: -1'), /line \d+.*organization\.rate_limits/],
        ['key settings', withProject.replace('organization:\n', 'organization:\n  key_settings: {}\n'), /line 3\b.*key_settings/],
    ]) {
        assert.notEqual(yaml, withProject, what);
        const r = await apply(yaml);
        assert.equal(r.status, 400, `${what}: ${r.text}`);
        assert.match(r.json.error.message, re, what);
    }
    assert.equal(await exportYaml(), withProject, 'nothing was applied');

    // Back to the organization's settings before this test (the project stays).
    const restore = orig.slice(0, orig.indexOf('users:\n')) + withProject.slice(withProject.indexOf('users:\n'));
    assert.equal((await apply(restore)).status, 200);
    assert.equal(await exportYaml(), restore);
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

test('CLI: budgets get and set at every level, rate-limits for the organization and a key', T, async () => {
    const { gw } = ctx;
    const org = await tg(['budgets', 'get']);
    assert.equal(org.code, 0, org.stderr);
    assert.match(org.stdout, /^budget of\s+organization org-/);
    assert.match(org.stdout, /\nmonthly limit\s+\$100\.00\n/);
    assert.match(org.stdout, /\nthresholds\s+50%, 80%, 100%\n/);

    const p = await newProject(gw, { models: ['gpt-4o-mini', 'mock-small'] });
    const set = await tg(['budgets', 'set', '--project', p.name, '--monthly-usd', '12.50', '--thresholds', '50,90',
        '--auto-increase', '90:5:50', '--on-exceed', 'lower_max_tokens', '--notify-emails', 'a@example.com, b@example.com',
        '--webhook-url', 'https://hooks.example.com/t', '--webhook-secret', 'env:T_HOOK']);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /\nmonthly limit\s+\$12\.50\n/);
    assert.match(set.stdout, /\nauto increase\s+at 90% by \$5\.00 up to \$50\.00\n/);
    assert.match(set.stdout, /\nnotify emails\s+a@example\.com, b@example\.com\n/);
    assert.match(set.stdout, /\nwebhook\s+https:\/\/hooks\.example\.com\/t \(signed with env:T_HOOK\)\n/);
    const api = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/budget`));
    assert.equal(api.monthly_limit_micros, 12500000);
    assert.deepEqual(api.auto_increase, { at_pct: 90, by_micros: 5000000, max_micros: 50000000 });

    const json = await tg(['--json', 'budgets', 'set', '--project', p.id, '--monthly-usd', 'none', '--thresholds', 'none']);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout).monthly_limit, null);
    assert.deepEqual(JSON.parse(json.stdout).thresholds_pct, []);

    const k = await keyIdOf(gw, p.id, uniqueName('ck'));
    const ks = await tg(['budgets', 'set', '--project', p.id, '--api-key', k.id, '--monthly-usd', '3']);
    assert.equal(ks.code, 0, ks.stderr);
    assert.match(ks.stdout, /^budget of\s+key key_/);
    for (const [args, re] of [
        [['budgets', 'set', '--project', p.id], /give at least one/],
        [['budgets', 'set', '--monthly-usd', 'lots'], /--monthly-usd/],
        [['budgets', 'set', '--webhook-secret', 'hunter2'], /--webhook-secret wants a reference/],
        [['budgets', 'set', '--auto-increase', '90:5'], /--auto-increase/],
        [['budgets', 'get', '--api-key', k.id], /--api-key needs --project/],
    ]) {
        const r = await tg(args);
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, re);
        assert.ok(!r.stderr.includes('hunter2') || re.source.includes('webhook'), r.stderr);
    }
    const api400 = await tg(['budgets', 'set', '--project', p.id, '--thresholds', '90,50']);
    assert.equal(api400.code, 1);
    assert.match(api400.stderr, /400.*thresholds_pct/);

    const rl = await tg(['rate-limits', 'set', '--model', 'all', '--rpd', '80000000']);
    assert.equal(rl.code, 0, rl.stderr);
    assert.match(rl.stdout, /\n\*\s+-\s+-\s+80000000\s+-\n$/);
    const orgList = await tg(['rate-limits', 'list']);
    assert.equal(orgList.code, 0, orgList.stderr);
    assert.match(orgList.stdout.split('\n')[1], /^\*\s+-\s+-\s+80000000\s+-$/);
    assert.equal((await tg(['rate-limits', 'set', '--model', 'all', '--rpd', 'none'])).code, 0);
    const krl = await tg(['rate-limits', 'set', '--project', p.id, '--api-key', k.id, '--model', 'gpt-4o-mini', '--tpm', '500']);
    assert.equal(krl.code, 0, krl.stderr);
    const keyList = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/api_keys/${k.id}/rate_limits`));
    assert.equal(keyList.data.find((l) => l.model === 'gpt-4o-mini').max_tokens_per_1_minute, 500);
    const reader = await newReader(gw, [{ id: p.id, role: 'owner' }]);
    const denied = await tg(['budgets', 'set', '--monthly-usd', '1'], reader);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /403/);
});

shutdownTest(ctx);
