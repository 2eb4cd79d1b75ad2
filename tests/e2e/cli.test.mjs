// cli.test.mjs: the `tollgate` command line (the same binary as the gateway) against a real
// gateway: projects (create, rename, models, environment), invites accepted without an admin
// key, user and member roles, service accounts whose key works, the audit log and its chain
// check (also after the SQLite file is edited), history/diff/rollback, export and apply
// (dry run, a modified file, export again), and errors: a reader trying owner commands exits 1
// with the API's 403 message, bad command lines exit 2. Every admin change is cross-checked
// through the admin API itself, so the test proves what the CLI did, not what it printed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { useGateway, shutdownTest, T } from './lib/setup.mjs';

const execFileP = promisify(execFile);
const ctx = useGateway();
const KEY_RE = /^tg-[A-Za-z0-9_-]{43}$/;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-cli-e2e-'));

let seq = 0;
function uniqueName(base) {
    seq += 1;
    return `${base}-${process.pid}-${seq}`;
}

// Runs `tollgate ARGS` with TOLLGATE_URL and TOLLGATE_ADMIN_KEY set (key: null sets none and
// points the data dir at an empty directory, so no key is found anywhere). Never throws on a
// non-zero exit: returns { code, stdout, stderr }.
async function tg(args, { key } = {}) {
    const { gw } = ctx;
    const env = { ...process.env, TOLLGATE_URL: gw.url, TOLLGATE_DATA_DIR: tmp };
    delete env.TOLLGATE_ADMIN_KEY;
    const k = key === undefined ? gw.adminKey : key;
    if (k) env.TOLLGATE_ADMIN_KEY = k;
    try {
        const { stdout, stderr } = await execFileP(process.env.TOLLGATE_BIN, args, { env, maxBuffer: 1 << 24 });
        return { code: 0, stdout, stderr };
    } catch (e) {
        if (typeof e.code !== 'number') throw e;
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
}

// Runs and expects exit 0; returns stdout.
async function ok(args, opts) {
    const r = await tg(args, opts);
    assert.equal(r.code, 0, `tollgate ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
}

async function okJson(args, opts) {
    return JSON.parse(await ok(['--json', ...args], opts));
}

async function api(p, opts) {
    const r = await ctx.gw.adminFetch(p, opts);
    assert.equal(r.status, 200, r.text);
    return r.json;
}

// The table row (columns split on 2+ spaces) whose first cell is first, or undefined.
function row(table, first) {
    return table
        .split('\n')
        .map((l) => l.split(/ {2,}/))
        .find((cells) => cells[0] === first);
}

// Invites email as role through the CLI and accepts with the printed token (no admin key).
async function join(role, projects) {
    const email = `${uniqueName('person')}@example.com`;
    const args = ['invites', 'create', email, '--role', role];
    if (projects) args.push('--projects', projects);
    const inv = await tg(args);
    assert.equal(inv.code, 0, inv.stderr);
    const token = inv.stdout.trim();
    assert.match(token, /^tginv-/);
    assert.equal(inv.stdout, `${token}\n`, 'the token alone on stdout');
    assert.match(inv.stderr, /not shown again/);
    const acc = await tg(['invites', 'accept', token, '--name', 'Ada Lovelace'], { key: null });
    assert.equal(acc.code, 0, acc.stderr);
    const key = acc.stdout.trim();
    assert.match(key, KEY_RE);
    assert.match(acc.stderr, new RegExp(`Welcome, Ada Lovelace <${email}>`));
    ctx.gw.clientKeys.push(key);
    return { email, key, token };
}

test('projects: create, rename, set models and environment, get and list', T, async () => {
    const name = uniqueName('cli-proj');
    const created = await ok(['projects', 'create', name, '--environment', 'staging', '--models', 'gpt-4o-mini']);
    assert.match(created, new RegExp(`^Created project ${name} \\(proj_\\w+\\): environment staging, models: gpt-4o-mini\\.\\n$`));
    const id = created.match(/\((proj_\w+)\)/)[1];

    const renamed = `${name}-renamed`;
    assert.match(await ok(['projects', 'rename', name, renamed]), new RegExp(`^Updated project ${renamed} \\(${id}\\)`));
    await ok(['projects', 'set-models', renamed, 'gpt-4o-mini', 'mock-small']);
    await ok(['projects', 'modify', id, '--environment', 'qa']);
    const p = await api(`/v1/organization/projects/${id}`);
    assert.equal(p.name, renamed);
    assert.equal(p.environment, 'qa');
    assert.deepEqual(p.models, ['gpt-4o-mini', 'mock-small']);

    // --json is the API's own object; the table shows it field by field.
    const json = await okJson(['projects', 'get', renamed]);
    assert.deepEqual(json, p);
    const view = await ok(['projects', 'get', renamed]);
    assert.deepEqual(row(view, 'models'), ['models', '["gpt-4o-mini","mock-small"]']);
    assert.deepEqual(row(view, 'environment'), ['environment', 'qa']);
    assert.deepEqual(row(await ok(['projects', 'list']), id), [id, renamed, 'qa', 'active']);

    await ok(['projects', 'set-models', renamed, '--all-models']);
    assert.equal((await api(`/v1/organization/projects/${id}`)).models, null);
    const none = await tg(['projects', 'set-models', renamed]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /needs MODEL\.\.\. or --all-models/);

    const bad = await tg(['projects', 'set-models', renamed, 'mock-small', 'mock-small']);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, "tollgate: 400 'models' names the same model twice.\n");

    assert.match(await ok(['projects', 'archive', id]), /^Archived project/);
    assert.equal(row(await ok(['projects', 'list']), id), undefined, 'archived projects are hidden');
    assert.deepEqual(row(await ok(['projects', 'list', '--archived']), id), [id, renamed, 'qa', 'archived']);
});

test('invites, users and members: accept without a key, roles, and a reader refused', T, async () => {
    const project = uniqueName('cli-team');
    await ok(['projects', 'create', project]);
    const reader = await join('reader', `${project}:member`);

    const invites = await ok(['invites', 'list']);
    assert.ok(invites.split('\n').some((l) => l.includes(reader.email) && / accepted /.test(l)), invites);
    const again = await tg(['invites', 'accept', reader.token], { key: null });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^tollgate: 400 This invite was already accepted or has expired\.\n$/);

    const users = await api('/v1/organization/users?limit=100');
    const user = users.data.find((u) => u.email === reader.email);
    assert.equal(user.role, 'reader');
    assert.deepEqual(row(await ok(['users', 'list']), user.id).slice(0, 4), [user.id, 'Ada Lovelace', reader.email, 'reader']);
    assert.deepEqual(row(await ok(['members', 'list', '--project', project]), user.id).slice(0, 4), [
        user.id,
        'Ada Lovelace',
        reader.email,
        'member',
    ]);

    // The reader's own key: owner commands fail with the API's 403, reads work.
    for (const args of [
        ['users', 'set-role', reader.email, 'owner'],
        ['invites', 'create', 'x@example.com', '--role', 'reader'],
        ['projects', 'create', uniqueName('nope')],
        ['audit', 'verify'],
        ['export'],
    ]) {
        const r = await tg(args, { key: reader.key });
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
        assert.equal(r.stdout, '');
        assert.equal(r.stderr, 'tollgate: 403 This action needs the organization owner role; your admin key has the reader role.\n');
    }
    assert.equal(row(await ok(['projects', 'list'], { key: reader.key }), (await api(`/v1/organization/projects/${project}`)).id)[1], project);

    // The owner changes roles; users and members are named by e-mail or id.
    assert.match(await ok(['members', 'set-role', reader.email, 'owner', '--project', project]), /is now owner of project/);
    assert.equal((await api(`/v1/organization/projects/${project}/users/${user.id}`)).role, 'owner');
    assert.match(await ok(['users', 'set-role', user.id, 'owner']), new RegExp(`^${reader.email} \\(${user.id}\\) is now owner`));
    assert.equal((await api(`/v1/organization/users/${user.id}`)).role, 'owner');
    assert.equal((await okJson(['users', 'get', reader.email])).role, 'owner');
    await ok(['users', 'set-role', reader.email, 'reader']);
    await ok(['members', 'remove', reader.email, '--project', project]);
    const gone = await ctx.gw.adminFetch(`/v1/organization/projects/${project}/users/${user.id}`);
    assert.equal(gone.status, 404);

    // Admin keys: the reader makes one for itself and revokes it.
    const made = await tg(['admin-keys', 'create', '--name', 'laptop'], { key: reader.key });
    assert.equal(made.code, 0, made.stderr);
    const second = made.stdout.trim();
    assert.match(second, KEY_RE);
    ctx.gw.clientKeys.push(second);
    const keyId = made.stderr.match(/admin key (key_\w+)/)[1];
    assert.equal(row(await ok(['admin-keys', 'list'], { key: second }), keyId)[3], user.id);
    assert.match(await ok(['admin-keys', 'revoke', keyId], { key: reader.key }), /Revoked admin key/);
    const revoked = await tg(['users', 'list'], { key: second });
    assert.equal(revoked.code, 1);
    assert.match(revoked.stderr, /^tollgate: 401 /);
});

test('service accounts: create (its key works), rename, more keys, delete', T, async () => {
    const { gw } = ctx;
    const name = uniqueName('svc');
    const made = await tg(['service-accounts', 'create', name, '--project', 'staging']);
    assert.equal(made.code, 0, made.stderr);
    const key = made.stdout.trim();
    assert.match(key, KEY_RE);
    gw.clientKeys.push(key);
    const id = made.stderr.match(/\((svc_acct_\w+)\)/)[1];
    const models = await gw.client(key).models.list();
    assert.ok(models.data.length > 0);

    assert.deepEqual(row(await ok(['service-accounts', 'list', '--project', 'staging']), id).slice(0, 3), [id, name, 'member']);
    await ok(['service-accounts', 'rename', id, `${name}-2`, '--project', 'staging']);
    assert.equal((await api(`/v1/organization/projects/staging/service_accounts/${id}`)).name, `${name}-2`);
    const more = await tg(['service-accounts', 'key-create', id, '--project', 'staging', '--name', 'second']);
    assert.equal(more.code, 0, more.stderr);
    gw.clientKeys.push(more.stdout.trim());
    assert.match(more.stdout.trim(), KEY_RE);
    assert.match(await ok(['service-accounts', 'delete', id, '--project', 'staging']), /keys are revoked/);
    await assert.rejects(gw.client(key, { maxRetries: 0 }).models.list(), (e) => e.status === 401);
});

test('audit: list shows the changes with filters; verify ok, and exit 1 when an entry is edited', T, async () => {
    const { gw } = ctx;
    const name = uniqueName('cli-audit');
    await ok(['projects', 'create', name]);
    await ok(['projects', 'set-models', name, 'mock-small']);
    const entries = await okJson(['audit', 'list', '--project', name]);
    assert.deepEqual(
        entries.data.map((e) => e.type),
        ['project.updated', 'project.created'],
    );
    const table = await ok(['audit', 'list', '--project', name]);
    const lines = table.trim().split('\n');
    assert.match(lines[0], /^time \(UTC\) +type +actor +project +target$/);
    assert.match(lines[1], new RegExp(` project\\.updated +\\S+ +${name} +proj_`));
    assert.match(lines[2], / project\.created /);
    const one = await tg(['audit', 'list', '--type', 'project.created', '--limit', '1']);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout.trim().split('\n').length, 2);
    assert.match(one.stdout, new RegExp(`project\\.created .*${name}`));
    assert.match(one.stderr, /newest shown/);
    const future = await okJson(['audit', 'list', '--since', '2999-01-01']);
    assert.deepEqual(future.data, []);

    const good = await tg(['audit', 'verify']);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /^The audit log is intact: \d+ entries/);

    // Edit an entry in the SQLite file: verify names it and exits 1; put it back: 0 again.
    const seqNo = entries.data[1].seq;
    const sql = (s) => execFileP('sqlite3', ['-cmd', '.timeout 5000', gw.dbPath, s]).then((r) => r.stdout.trim());
    const original = await sql(`SELECT after FROM audit WHERE seq = ${seqNo}`);
    await sql(`UPDATE audit SET after = '{"name":"forged"}' WHERE seq = ${seqNo}`);
    const broken = await tg(['audit', 'verify']);
    assert.equal(broken.code, 1);
    assert.equal(broken.stdout, '');
    assert.equal(
        broken.stderr,
        `tollgate: the audit log's hash chain is broken at entry ${seqNo}: entry ${seqNo} was changed after it was written (its hash does not match)\n`,
    );
    const brokenJson = await tg(['--json', 'audit', 'verify']);
    assert.equal(brokenJson.code, 1);
    assert.equal(JSON.parse(brokenJson.stdout).first_invalid_seq, seqNo);
    await sql(`UPDATE audit SET after = '${original.replaceAll("'", "''")}' WHERE seq = ${seqNo}`);
    assert.equal((await tg(['audit', 'verify'])).code, 0);
});

test('history, diff and rollback', T, async () => {
    const name = uniqueName('cli-hist');
    await ok(['projects', 'create', name, '--models', 'gpt-4o-mini']);
    await ok(['projects', 'set-models', name, 'gpt-4o-mini', 'mock-small']);
    const hist = await okJson(['history', '--project', name]);
    assert.equal(hist.data.length, 2);
    const [v2, v1] = hist.data.map((v) => v.number);
    assert.ok(v2 > v1);
    const table = await ok(['history', '--project', name]);
    assert.match(table, /^version +project +created \(UTC\) +actor +reason +settings\n/);
    assert.deepEqual(row(table, String(v2)).slice(-1), ['{"models":["gpt-4o-mini","mock-small"]}']);

    const diff = await ok(['diff', String(v1), String(v2)]);
    assert.deepEqual(row(diff, 'models'), ['models', 'changed', '["gpt-4o-mini"]', '["gpt-4o-mini","mock-small"]']);
    assert.equal(await ok(['diff', String(v2), String(v2)]), 'No differences.\n');

    const back = await ok(['rollback', String(v1)]);
    const m = back.match(new RegExp(`^Restored the settings of version ${v1} onto project ${name}: now version (\\d+)\\.\\n$`));
    assert.ok(m, back);
    assert.ok(Number(m[1]) > v2);
    assert.deepEqual((await api(`/v1/organization/projects/${name}`)).models, ['gpt-4o-mini']);

    const bad = await tg(['rollback', 'latest']);
    assert.equal(bad.code, 2);
    const missing = await tg(['rollback', '999999']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^tollgate: 404 /);
});

test('export, apply --dry-run (no changes), apply a modified file, export again equals it', T, async () => {
    const { gw } = ctx;
    const name = uniqueName('cli-org');
    await ok(['projects', 'create', name, '--environment', 'staging']);
    const yaml = await ok(['export']);
    const direct = await gw.adminFetch('/v1/organization/export');
    assert.equal(yaml, direct.text, 'export prints the API answer byte for byte');
    assert.ok(!/tg-[A-Za-z0-9_-]{43}/.test(yaml), 'no key material');
    const file = path.join(tmp, 'org.yaml');
    fs.writeFileSync(file, yaml);

    assert.equal(await ok(['apply', file, '--dry-run']), `No changes: the organization already matches ${file}.\n`);
    assert.equal(await ok(['apply', file]), `No changes: the organization already matches ${file}.\n`);

    const from = `- name: ${name}\n  environment: staging\n`;
    assert.ok(yaml.includes(from), yaml);
    const changed = yaml.replace(from, `- name: ${name}\n  environment: production\n`);
    const file2 = path.join(tmp, 'org2.yaml');
    fs.writeFileSync(file2, changed);

    const dry = await ok(['apply', file2, '--dry-run']);
    assert.match(dry, new RegExp(`^Dry run, nothing was changed\\. Applying ${file2} would make 1 change:\\n`));
    assert.deepEqual(row(dry, 'update'), ['update', 'project', name, 'environment: staging -> production']);
    assert.equal((await api(`/v1/organization/projects/${name}`)).environment, 'staging');

    const applied = await ok(['apply', file2]);
    assert.match(applied, new RegExp(`^Applied ${file2}: 1 change\\.\\n`));
    assert.deepEqual(row(applied, 'update'), ['update', 'project', name, 'environment: staging -> production']);
    assert.equal((await api(`/v1/organization/projects/${name}`)).environment, 'production');
    assert.equal(await ok(['export']), changed);

    const json = await okJson(['apply', file2, '--dry-run']);
    assert.equal(json.object, 'organization.apply');
    assert.deepEqual(json.changes, []);
    const bad = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(bad, changed.replace('projects:\n', 'projects:\n- colour: red\n'));
    const refused = await tg(['apply', bad]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^tollgate: 400 The organization file is not valid: .*colour/);
    const absent = await tg(['apply', path.join(tmp, 'nope.yaml')]);
    assert.equal(absent.code, 1);
    assert.match(absent.stderr, /cannot read .*nope\.yaml: No such file or directory/);
});

test('keys and command-line errors: key get, exit 2 for a bad line, exit 1 with no admin key', T, async () => {
    const made = await tg(['keys', 'create', '--project', 'development', '--name', 'cli-e2e']);
    assert.equal(made.code, 0, made.stderr);
    ctx.gw.clientKeys.push(made.stdout.trim());
    const id = made.stderr.match(/Created key (key_\w+)/)[1];
    assert.equal((await okJson(['keys', 'get', id, '--project', 'development'])).status, 'active');

    const usage = await tg(['members', 'add', 'someone@example.com']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /'members add' needs --project NAME\|ID/);
    const nokey = await tg(['users', 'list'], { key: null });
    assert.equal(nokey.code, 1);
    assert.match(nokey.stderr, /^tollgate: no admin key found/);
    // --url and --key on the command line win over the environment.
    const explicit = await tg(['--url', `${ctx.gw.url}/v1`, '--key', ctx.gw.adminKey, 'users', 'list'], { key: 'tg-wrong' });
    assert.equal(explicit.code, 0, explicit.stderr);
});

test('cleanup of the temp dir', () => {
    fs.rmSync(tmp, { recursive: true, force: true });
});

shutdownTest(ctx);
