// roles.test.mjs: the README's admin route table is the contract. This file reads it, checks
// that it lists exactly the rows of the route tables in src/admin/*.c (with matching access
// levels), then calls every row as four callers: an owner, a reader who is a member of the
// project, a reader who is not, and a project key; each must get the documented class of
// answer (allowed: neither 401, 403, 5xx nor an unknown route; denied: 403; project key:
// 401 or 403).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ctx = useGateway();
const stamp = Date.now().toString(36);

// Every row of the README's table: { method, path, roles, what }.
function readmeRoutes() {
    const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const start = text.indexOf('<!-- admin-routes');
    assert.ok(start >= 0, 'README has the admin-routes table');
    const rows = [];
    for (const line of text.slice(start).split('\n').slice(1)) {
        if (!line.startsWith('|')) {
            if (rows.length) break;
            continue;
        }
        const cells = line.split('|').slice(1, -1).map((c) => c.trim());
        if (!/^(GET|POST|DELETE)$/.test(cells[0])) continue;
        rows.push({ method: cells[0], path: cells[1].replace(/`/g, ''), roles: cells[2], what: cells[3] });
    }
    return rows;
}

// Every row of the C route tables: { method, path, access }.
function sourceRoutes() {
    const rows = [];
    const dir = path.join(ROOT, 'src/admin');
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.c'))) {
        const src = fs.readFileSync(path.join(dir, f), 'utf8');
        for (const m of src.matchAll(/\{\s*TG_HTTP_(GET|POST|DELETE),\s*"([^"]+)",\s*ADMIN_(\w+)/g)) {
            rows.push({ method: m[1], path: `/v1/organization/${m[2]}`, access: m[3] });
        }
    }
    return rows;
}

// What a roles cell allows: { member, nonMember, anyone }.
function allowed(roles) {
    if (roles === 'anyone (invite token)') return { member: true, nonMember: true, anyone: true };
    if (roles === 'owner') return { member: false, nonMember: false };
    if (roles === 'owner, reader' || roles === 'owner, reader (own keys)') return { member: true, nonMember: true };
    if (roles === 'owner, reader (project member)') return { member: true, nonMember: false };
    if (roles === 'owner, reader (project owner)') return { member: false, nonMember: false };
    // The project is in the body (the walk's fixture names the walk project).
    if (roles === "owner, reader (member of the body's project)") return { member: true, nonMember: false };
    throw new Error(`unknown roles cell "${roles}"`);
}

const ACCESS_OF_ROLES = {
    owner: 'OWNER',
    'owner, reader': 'ORG_READ',
    'owner, reader (own keys)': 'ORG_READ',
    'owner, reader (project member)': 'PROJECT',
    'owner, reader (project owner)': 'PROJECT',
    'anyone (invite token)': 'ORG_READ',
    "owner, reader (member of the body's project)": 'ORG_READ',
};

// Bodies (and queries) for POST rows; each is harmless when it succeeds.
function fixture(row) {
    const n = `${stamp}-${Math.random().toString(36).slice(2, 8)}`;
    const p = row.path.replace(/^\/v1\/organization\//, '');
    const bodies = {
        projects: { name: `walk-made-${n}` },
        'projects/{project_id}': { environment: 'walk' },
        'projects/{project_id}/archive': {},
        'projects/{project_id}/users': { email: `nobody-${n}@example.com`, role: 'member' },
        'projects/{project_id}/users/{user_id}': { role: 'member' },
        'projects/{project_id}/api_keys': { name: `walk-${n}` },
        'projects/{project_id}/service_accounts': { name: `walk-${n}` },
        'projects/{project_id}/service_accounts/{service_account_id}': { name: `walk-${n}` },
        'projects/{project_id}/service_accounts/{service_account_id}/api_keys': { name: `walk-${n}` },
        'users/{user_id}': { role: 'reader' },
        invites: { email: `walk-${n}@example.com`, role: 'reader' },
        'invites/accept': { token: 'tginv-doesnotexist' },
        admin_api_keys: { name: `walk-${n}` },
        'config_versions/{number}/rollback': {},
        'projects/{project_id}/rate_limits/{rate_limit_id}': { max_requests_per_1_minute: 600 },
        'projects/{project_id}/api_keys/{key_id}/rate_limits/{rate_limit_id}': { max_requests_per_1_minute: 600 },
        'rate_limits/{rate_limit_id}': { max_requests_per_1_day: 100000000 },
        budget: { thresholds_pct: [50, 80, 100] },
        'projects/{project_id}/budget': { max_n: 8 },
        'projects/{project_id}/api_keys/{key_id}/budget': { max_n: 8 },
        'projects/{project_id}/token_policy': { max_n: 4 },
        'projects/{project_id}/api_keys/{key_id}/token_policy': { max_n: 4 },
        'projects/{project_id}/aliases': { walk: { model: 'gpt-4o-mini' } },
        apply: { yaml: 'not_a_section: [1' },
        'cache/invalidate': { project_id: walk?.id, model: 'walk-model' },
        alert_rules: { name: `walk-${n}`, metric: 'error_rate', threshold: 0.5 },
        'alert_rules/{rule_id}': { threshold: 0.6 },
    };
    if (row.method !== 'POST') return { query: '' };
    assert.ok(p in bodies, `no fixture body for POST ${p}: add one to roles.test.mjs`);
    return { body: bodies[p], query: p === 'apply' ? '?dry_run=true' : '' };
}

const PARAMS = {
    key_id: 'key_doesnotexist',
    user_id: 'user-doesnotexist',
    invite_id: 'invite-doesnotexist',
    service_account_id: 'svc_acct_doesnotexist',
    number: '999999',
    rate_limit_id: 'rl-gpt-4o-mini',
    rule_id: 'alr_doesnotexist',
};

const keys = {}; // owner, member, nonMember, project: key values
let walk; // the project the walk targets

// The callers and the walk project, made once (the file's before() hook starts the gateway).
let ready = null;
function setup() {
    ready ??= makeCallers();
    return ready;
}

async function makeCallers() {
    const { gw } = ctx;
    keys.owner = gw.adminKey;
    const p = await gw.adminFetch('/v1/organization/projects', { body: { name: `walk-${stamp}` } });
    assert.equal(p.status, 200, p.text);
    walk = p.json;
    for (const [who, projects] of [
        ['member', [{ id: walk.id, role: 'member' }]],
        ['nonMember', []],
    ]) {
        const inv = await gw.adminFetch('/v1/organization/invites', {
            body: { email: `${who.toLowerCase()}-${stamp}@example.com`, role: 'reader', projects },
        });
        assert.equal(inv.status, 200, inv.text);
        const acc = await gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.json.token } });
        assert.equal(acc.status, 200, acc.text);
        keys[who] = acc.json.admin_api_key.value;
        gw.clientKeys.push(keys[who]);
    }
    keys.project = await gw.createKey(walk.id, 'walk-project-key');
}

test('the README route table lists exactly the routes of src/admin, with their access', () => {
    const doc = readmeRoutes();
    const src = sourceRoutes();
    assert.ok(doc.length >= 40, `README rows: ${doc.length}`);
    const id = (r) => `${r.method} ${r.path}`;
    assert.deepEqual(doc.map(id).sort(), src.map(id).sort());
    assert.equal(new Set(doc.map(id)).size, doc.length, 'no row twice');
    for (const r of doc) {
        const s = src.find((x) => id(x) === id(r));
        assert.equal(ACCESS_OF_ROLES[r.roles], s.access, `${id(r)}: README says "${r.roles}", code says ADMIN_${s.access}`);
    }
});

test('every admin route answers each caller as the README says', { timeout: T.timeout * 3 }, async () => {
    await setup();
    const { gw } = ctx;
    // Archiving ends the walk project: that row goes last.
    const rows = readmeRoutes().sort((a, b) => a.path.endsWith('/archive') - b.path.endsWith('/archive'));
    const problems = [];
    for (const row of rows) {
        const rule = allowed(row.roles);
        let url = row.path.replace('{project_id}', walk.id);
        url = url.replace(/\{(\w+)\}/g, (_, name) => {
            assert.ok(name in PARAMS, `no value for {${name}} in ${row.path}`);
            return PARAMS[name];
        });
        // Owner last: its calls may change things (create, archive).
        for (const who of ['nonMember', 'member', 'project', 'owner']) {
            const { body, query } = fixture(row);
            const r = await gw.adminFetch(url + query, { method: row.method, key: keys[who], body });
            if (r.json && r.json.value) gw.clientKeys.push(r.json.value);
            if (r.json && r.json.api_key && r.json.api_key.value) gw.clientKeys.push(r.json.api_key.value);
            const expectAllowed = who === 'owner' || rule.anyone || (who === 'member' ? rule.member : who === 'nonMember' ? rule.nonMember : false);
            const label = `${row.method} ${row.path} as ${who}: ${r.status} ${r.text.slice(0, 200)}`;
            const unknownRoute = r.status === 405 || (r.status === 404 && /Invalid URL/.test(r.json?.error?.message || ''));
            if (expectAllowed) {
                if (r.status === 401 || r.status === 403 || r.status >= 500 || unknownRoute) problems.push(`expected allowed: ${label}`);
            } else if (who === 'project') {
                if (r.status !== 401 && r.status !== 403) problems.push(`expected 401/403: ${label}`);
            } else if (r.status !== 403) {
                problems.push(`expected 403: ${label}`);
            } else if (!['insufficient_role', 'not_a_project_member', 'not_a_project_owner'].includes(r.json?.error?.code) && typeof r.json?.error?.message !== 'string') {
                problems.push(`403 without an OpenAI error: ${label}`);
            }
        }
    }
    assert.deepEqual(problems, []);
});

shutdownTest(ctx);
