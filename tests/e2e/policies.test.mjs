// policies.test.mjs: token policies and model aliases end to end: what the upstream receives
// (default and clamped max_tokens, clamped n, added stop, forced parameters), the
// x-tollgate-policy header listing the changes, the refusals (above the maximum in refuse
// mode, a forbidden parameter, a prompt above its size), a key's policy over its project's,
// the admin routes (validation, audit), and aliases resolving to the cheapest allowed model
// of a tier and following an allow-list change, with the ledger keeping the alias asked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';

const TIER_PRICES = {
    'tier-pricey': { input: '5', cached_input: '2.5', output: '20' },
    'tier-cheap': { input: '0.2', cached_input: '0.1', output: '0.8' },
    'tier-mid': { input: '1', cached_input: '0.5', output: '4' },
};

const ctx = useGateway({
    gateway: {
        prices: TIER_PRICES,
        extraYaml: 'model_tiers:\n  small: [tier-pricey, tier-cheap, tier-mid]\n',
    },
});

const ORG = '/v1/organization';
let seq = 0;

async function ok(r) {
    const res = await r;
    assert.equal(res.status, 200, res.text);
    return res.json;
}

async function newProject(gw) {
    seq += 1;
    return ok(gw.adminFetch(`${ORG}/projects`, { body: { name: `pol-${process.pid}-${seq}` } }));
}

async function keyIdOf(gw, project, name) {
    const value = await gw.createKey(project, name);
    const list = await ok(gw.adminFetch(`${ORG}/projects/${project}/api_keys?limit=100`));
    return { id: list.data.find((x) => x.name === name).id, value };
}

async function chat(gw, key, body) {
    return gw.rawFetch('/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
    });
}

test('a project token policy: default max_tokens, clamped n, added stop, forced params, and the header', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const set = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`, {
        body: { default_max_tokens: 50, max_tokens: 100, max_n: 2, default_stop: ['END'], forced_params: { temperature: 0 } },
    }));
    assert.equal(set.object, 'project.token_policy');
    assert.equal(set.token_policy.max_n, 2);
    const got = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`));
    assert.deepEqual(got.token_policy, set.token_policy);
    const key = await gw.createKey(p.id, 'k');

    let mark = up.mark();
    let r = await chat(gw, key, { model: 'gpt-4o-mini', messages: msg('hello there'), n: 5, temperature: 1.5 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-policy'), 'temperature=forced,max_tokens=default,n=clamped,stop=added');
    let sent = up.since(mark)[0].body;
    assert.equal(sent.max_tokens, 50);
    assert.equal(sent.n, 2);
    assert.deepEqual(sent.stop, ['END']);
    assert.equal(sent.temperature, 0);

    // Above the maximum: clamped; the client's own stop is kept; nothing else reported.
    mark = up.mark();
    r = await chat(gw, key, { model: 'gpt-4o-mini', messages: msg('hi'), max_tokens: 900, stop: 'x', temperature: 0 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-policy'), 'max_tokens=clamped');
    sent = up.since(mark)[0].body;
    assert.equal(sent.max_tokens, 100);
    assert.equal(sent.stop, 'x');

    // The audit log has the change.
    const audit = await ok(gw.adminFetch(`${ORG}/audit_logs?event_types[]=token_policy.updated&limit=100`));
    assert.ok(audit.data.length >= 1, JSON.stringify(audit));
});

test('refusals: above the maximum in refuse mode, a forbidden parameter, a prompt too large; none reaches the upstream', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`, {
        body: { max_tokens: 100, on_max_tokens: 'refuse', forbidden_params: ['logprobs'], max_prompt_bytes: 200 },
    }));
    const key = await gw.createKey(p.id, 'k');
    const mark = up.mark();
    let r = await chat(gw, key, { model: 'gpt-4o-mini', messages: msg('hi'), max_completion_tokens: 101 });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'max_completion_tokens');
    r = await chat(gw, key, { model: 'gpt-4o-mini', messages: msg('hi'), logprobs: true });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'logprobs');
    assert.match(r.json.error.message, /logprobs/);
    r = await chat(gw, key, { model: 'gpt-4o-mini', messages: msg('word '.repeat(100)) });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'messages');
    assert.equal(up.since(mark).length, 0);
    r = await chat(gw, key, { model: 'gpt-4o-mini', messages: msg('hi'), max_tokens: 100 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-policy'), null, 'nothing changed, no header');
});

test('a bad policy is refused by the admin route, naming the member; a key policy overrides the project one', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    let r = await gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`, { body: { max_tokens: 10, default_max_tokens: 20 } });
    assert.equal(r.status, 400, r.text);
    r = await gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`, { body: { max_n: 'two' } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.param, 'max_n');
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}/token_policy`, { body: { max_tokens: 500, default_max_tokens: 300 } }));
    const k = await keyIdOf(gw, p.id, 'tight');
    const kp = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/api_keys/${k.id}/token_policy`, { body: { max_tokens: 40 } }));
    assert.equal(kp.object, 'project.api_key.token_policy');
    const mark = up.mark();
    r = await chat(gw, k.value, { model: 'gpt-4o-mini', messages: msg('hi'), max_tokens: 400 });
    assert.equal(r.status, 200, r.text);
    assert.equal(up.since(mark)[0].body.max_tokens, 40);
    // The project's default is bounded by the key's maximum.
    r = await chat(gw, k.value, { model: 'gpt-4o-mini', messages: msg('hi') });
    assert.equal(up.since(mark)[1].body.max_tokens, 40);
});

test('aliases: a tier resolves to its cheapest allowed model and follows the allow-list; the ledger keeps the alias', T, async () => {
    const { gw, up } = ctx;
    const p = await newProject(gw);
    const bad = await gw.adminFetch(`${ORG}/projects/${p.id}/aliases`, { body: { fast: { tier: 'small', model: 'x' } } });
    assert.equal(bad.status, 400, bad.text);
    const set = await ok(gw.adminFetch(`${ORG}/projects/${p.id}/aliases`, {
        body: { fast: { tier: 'small' }, big: { model: 'tier-pricey' } },
    }));
    assert.equal(set.object, 'project.aliases');
    const key = await gw.createKey(p.id, 'k');
    let mark = up.mark();
    let r = await chat(gw, key, { model: 'fast', messages: msg('hi') });
    assert.equal(r.status, 200, r.text);
    assert.equal(up.since(mark)[0].body.model, 'tier-cheap');
    assert.equal(r.headers.get('x-tollgate-policy'), 'model=aliased');
    const rows = await gw.waitLedger(r.headers.get('x-request-id'));
    assert.equal(rows[0].model_requested, 'fast');

    r = await chat(gw, key, { model: 'big', messages: msg('hi') });
    assert.equal(r.status, 200, r.text);
    assert.equal(up.since(mark)[1].body.model, 'tier-pricey');

    // The cheapest model leaves the allow-list: the next request moves to the next cheapest.
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}`, { body: { models: ['tier-pricey', 'tier-mid', 'gpt-4o-mini'] } }));
    mark = up.mark();
    r = await chat(gw, key, { model: 'fast', messages: msg('hi') });
    assert.equal(r.status, 200, r.text);
    assert.equal(up.since(mark)[0].body.model, 'tier-mid');

    // No allowed model in the tier: 404 naming the alias.
    await ok(gw.adminFetch(`${ORG}/projects/${p.id}`, { body: { models: ['gpt-4o-mini'] } }));
    r = await chat(gw, key, { model: 'fast', messages: msg('hi') });
    assert.equal(r.status, 404, r.text);
    assert.match(r.json.error.message, /fast/);
});

// Runs `tollgate ARGS` against the gateway with the admin key; resolves { code, stdout, stderr }.
async function tg(gw, args) {
    const env = { ...process.env, TOLLGATE_URL: gw.url, TOLLGATE_ADMIN_KEY: gw.adminKey };
    try {
        const { stdout, stderr } = await promisify(execFile)(process.env.TOLLGATE_BIN, args, { env });
        return { code: 0, stdout, stderr };
    } catch (e) {
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
}

test('the CLI: policy get|set and aliases get|set', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw);
    let r = await tg(gw, ['policy', 'set', '{"max_n": 3, "default_stop": ["END"]}', '--project', p.id]);
    assert.equal(r.code, 0, r.stderr);
    r = await tg(gw, ['policy', 'get', '--project', p.id, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).token_policy, { max_n: 3, default_stop: ['END'] });
    r = await tg(gw, ['policy', 'set', '{"max_n": 0}', '--project', p.id]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /max_n/);
    r = await tg(gw, ['policy', 'set', 'not json', '--project', p.id]);
    assert.equal(r.code, 2);
    r = await tg(gw, ['aliases', 'set', '{"fast": {"tier": "small"}}', '--project', p.id]);
    assert.equal(r.code, 0, r.stderr);
    r = await tg(gw, ['aliases', 'get', '--project', p.id]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /"tier": "small"/);
});

shutdownTest(ctx);
