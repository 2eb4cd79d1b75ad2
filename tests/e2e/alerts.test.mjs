// alerts.test.mjs: alert rules end to end (issue 6, part 3). An error-rate rule on one
// project and model, with a webhook (a receiver in this process) and an e-mail channel (a real
// SMTP server, npm smtp-server, as notify.test.mjs uses). The scripted upstream answers 500
// (user "behaviour:fail-500"): the rule must fire exactly once, by webhook and by e-mail; then
// the gateway's test clock moves past the window and successes follow: the rule must resolve
// exactly once. Alerts, the rule's state and the outbox are checked through the admin API, and
// a restart on the same store must not fire the rule again. A p95 latency rule (slow first
// bytes) and a spend_forecast rule (signed with the project budget's secret) follow.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startUpstream } from './lib/upstream.mjs';
import { startGateway, stopRestarted, newUpstreamKey, newAzureKey, SLOW } from './lib/gateway.mjs';
import { Receivers } from './lib/receivers.mjs';

const OPS = 'ops@example.com';
const SECRET = 'whsec_' + crypto.randomBytes(12).toString('hex');
// Priced only for output: "say hi" with max_tokens 5 costs exactly 100 micro-dollars.
const PRICE = { 'spend-model': { input: '0', cached_input: '0', output: '20' } };
const rx = new Receivers();
const ctx = {
    upstreamKey: newUpstreamKey(),
    azureKey: newAzureKey(),
};

// Resolves once cond() holds (re-checked on every delivery and every 200 ms), or fails after
// the deadline with what arrived.
function until(what, cond) {
    return rx.until(what, cond, () => `hooks: ${JSON.stringify(rx.hooks.map((h) => h.json?.type))}\n${ctx.gw?.logs().slice(-4000)}`);
}

function gatewayOpts(extra = {}) {
    return {
        upstream: ctx.up,
        upstreamKey: ctx.upstreamKey,
        azureKey: ctx.azureKey,
        env: { TOLLGATE_TEST_CLOCK: '1', TG_ALERT_SECRET: SECRET },
        prices: PRICE,
        extraYaml: rx.notificationsYaml(),
        ...extra,
    };
}

before(async () => {
    ctx.up = await startUpstream({ apiKey: ctx.upstreamKey, azureKey: ctx.azureKey, slowFirstByteMs: 300 });
    await rx.start('/alerts');
    ctx.gw = await startGateway(gatewayOpts());
    ctx.first = ctx.gw;
});

after(async () => {
    await stopRestarted(ctx.first, ctx.gw);
    await rx.close();
    await ctx.up.close();
});

async function chat(behaviour) {
    const r = await ctx.gw.rawFetch('/v1/chat/completions', {
        method: 'POST',
        headers: { authorization: `Bearer ${ctx.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
            model: 'gpt-4o-mini',
            messages: [{ role: 'user', content: 'say hi' }],
            ...(behaviour ? { user: `behaviour:${behaviour}` } : {}),
        }),
    });
    return r.status;
}

function hooksOf(type) {
    return rx.hooks.filter((h) => h.json?.type === type && h.json.data.rule_id === ctx.ruleId);
}

function mailsOf(type) {
    return rx.mails.filter((m) => m.to === OPS && m.headers['x-tollgate-event'] === type);
}

// Moves the gateway's clock deltaMs further ahead of the real one (offsets accumulate).
async function moveClock(deltaMs) {
    ctx.offsetMs = (ctx.offsetMs || 0) + deltaMs;
    const r = await ctx.gw.adminFetch('/v1/organization/_test/clock', { body: { now_ms: Date.now() + ctx.offsetMs } });
    assert.equal(r.status, 200, r.text);
}

// Outbox rows of this rule, delivered ones only.
async function delivered(kind) {
    const r = await ctx.gw.adminFetch('/v1/organization/notifications?limit=100');
    assert.equal(r.status, 200, r.text);
    return r.json.data.filter((n) => n.event_key.startsWith(`alert:${ctx.ruleId}:`) && n.event_key.endsWith(`:${kind}`) && n.delivered_at !== null);
}

test('rule validation: clear 400s naming the field', { timeout: 30000 * SLOW }, async () => {
    const bad = [
        [{ name: 'x', metric: 'nope', threshold: 1 }, 'metric'],
        [{ name: 'x', metric: 'error_rate', threshold: 'high' }, 'threshold'],
        [{ name: 'x', metric: 'error_rate', threshold: 0.5, window_seconds: 10 }, 'window_seconds'],
        [{ name: 'x', metric: 'error_rate', threshold: 0.5, condition: 'sideways' }, 'condition'],
        [{ name: 'x', metric: 'breaker_open', threshold: 0, condition: 'change' }, 'condition'],
        [{ name: 'x', metric: 'error_rate', threshold: 0.5, project_id: 'proj_nope' }, 'project_id'],
        [{ name: 'x', metric: 'error_rate', threshold: 0.5, channels: { webhooks: ['ftp://x'] } }, 'channels.webhooks'],
        [{ name: 'x', metric: 'error_rate', threshold: 0.5, colour: 'red' }, 'colour'],
        [{ metric: 'error_rate', threshold: 0.5 }, 'name'],
    ];
    for (const [body, param] of bad) {
        const r = await ctx.gw.adminFetch('/v1/organization/alert_rules', { body });
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        assert.equal(r.json.error.param, param, JSON.stringify(body));
    }
});

test('an error-rate rule fires once when the upstream fails and resolves once after', { timeout: 90000 * SLOW }, async () => {
    const projects = await ctx.gw.adminFetch('/v1/organization/projects?limit=100');
    const staging = projects.json.data.find((p) => p.name === 'staging');
    ctx.projectId = staging.id;
    ctx.key = await ctx.gw.createKey('staging', 'alerts-e2e');

    const created = await ctx.gw.adminFetch('/v1/organization/alert_rules', {
        body: {
            name: 'chat errors',
            project_id: ctx.projectId,
            model: 'gpt-4o-mini',
            metric: 'error_rate',
            condition: 'above',
            threshold: 0.5,
            window_seconds: 60,
            min_requests: 3,
            channels: { webhooks: [rx.hookUrl], emails: [OPS] },
        },
    });
    assert.equal(created.status, 201, created.text);
    const rule = created.json;
    ctx.ruleId = rule.id;
    assert.match(rule.id, /^alr_/);
    assert.equal(rule.object, 'alert_rule');
    assert.equal(rule.state, 'ok');
    assert.equal(rule.enabled, true);
    assert.equal(rule.window_seconds, 60);
    assert.deepEqual(rule.channels, { webhooks: [rx.hookUrl], emails: [OPS] });

    // Two failures are below min_requests: nothing fires yet.
    assert.deepEqual([await chat('fail-500'), await chat('fail-500')].map((s) => s >= 500), [true, true]);
    const early = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`);
    assert.equal(early.json.state, 'ok');

    // The third makes 3 of 3: fired.
    assert.ok((await chat('fail-500')) >= 500);
    await until('alert.fired by webhook and e-mail', () => hooksOf('alert.fired').length >= 1 && mailsOf('alert.fired').length >= 1);
    const fired = hooksOf('alert.fired')[0].json;
    assert.equal(fired.data.metric, 'error_rate');
    assert.equal(fired.data.value, 1);
    assert.equal(fired.data.threshold, 0.5);
    assert.equal(fired.data.project_id, ctx.projectId);
    assert.equal(fired.data.model, 'gpt-4o-mini');
    assert.equal(fired.data.resolved_at, null);
    assert.match(mailsOf('alert.fired')[0].headers.subject, /alert chat errors fired/);

    const firing = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`);
    assert.equal(firing.json.state, 'firing');
    const alerts = await ctx.gw.adminFetch('/v1/organization/alerts?state=firing');
    assert.equal(alerts.status, 200, alerts.text);
    const mine = alerts.json.data.filter((a) => a.rule_id === ctx.ruleId);
    assert.equal(mine.length, 1);
    assert.equal(mine[0].state, 'firing');
    assert.equal(mine[0].fired_at, fired.data.fired_at);

    // More failures while firing change nothing.
    assert.ok((await chat('fail-500')) >= 500);

    // The window moves past the failures; successes follow: resolved.
    await moveClock(120000);
    for (let i = 0; i < 3; i++) assert.equal(await chat(null), 200);
    await until('alert.resolved by webhook and e-mail', () => hooksOf('alert.resolved').length >= 1 && mailsOf('alert.resolved').length >= 1);
    const resolved = hooksOf('alert.resolved')[0].json;
    assert.equal(resolved.data.alert_id, fired.data.alert_id);
    assert.equal(resolved.data.fired_at, fired.data.fired_at);
    assert.ok(resolved.data.resolved_at >= fired.data.fired_at + 60);

    // Both events sit delivered in the outbox under their keys; each arrived once.
    await until('outbox rows delivered', async () => (await delivered('fired')).length === 2 && (await delivered('resolved')).length === 2);
    const rows = [...(await delivered('fired')), ...(await delivered('resolved'))];
    assert.deepEqual(rows.map((n) => n.channel).sort(), ['email', 'email', 'webhook', 'webhook']);
    for (const n of rows) assert.match(n.event_key, new RegExp(`^alert:${ctx.ruleId}:${fired.data.fired_at}\\d{3}:(fired|resolved)$`));
    assert.equal(hooksOf('alert.fired').length, 1);
    assert.equal(hooksOf('alert.resolved').length, 1);
    assert.equal(mailsOf('alert.fired').length, 1);
    assert.equal(mailsOf('alert.resolved').length, 1);

    const after = await ctx.gw.adminFetch(`/v1/organization/alerts?state=resolved`);
    const done = after.json.data.filter((a) => a.rule_id === ctx.ruleId);
    assert.equal(done.length, 1);
    assert.equal(done[0].state, 'resolved');
    assert.equal(done[0].resolved_at, resolved.data.resolved_at);
    assert.equal((await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`)).json.state, 'ok');

    const health = await ctx.gw.adminFetch('/v1/organization/health?window_seconds=60');
    assert.equal(health.status, 200, health.text);
    const h = health.json.data.find((d) => d.model === 'gpt-4o-mini' && d.provider === 'up');
    assert.ok(h, health.text);
    assert.equal(h.requests, 3);
    assert.equal(h.errors, 0);
    assert.equal(h.breaker === null || typeof h.breaker === 'string', true);
});

test('firing survives a restart without firing again', { timeout: 90000 * SLOW }, async () => {
    // Fire again (a new firing of the same rule), then restart on the same store.
    await moveClock(120000);
    for (let i = 0; i < 3; i++) assert.ok((await chat('fail-500')) >= 500);
    await until('the second alert.fired', () => hooksOf('alert.fired').length >= 2);
    await until('the second firing delivered', async () => (await delivered('fired')).length === 4);
    await ctx.gw.stopAndCheck();
    ctx.gw = await startGateway(gatewayOpts({ dataDir: ctx.first.dataDir, adminKey: ctx.first.adminKey }));
    const r = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.state, 'firing');
    ctx.gw.clientKeys.push(ctx.key);
    // The restarted windows are empty and younger than the rule's window: the rule holds. A
    // sentinel rule that always holds (no open breaker is above -1) proves a tick evaluated
    // every rule: once it has fired, the first rule had its chance to fire again.
    const sentinel = await ctx.gw.adminFetch('/v1/organization/alert_rules', {
        body: { name: 'sentinel', metric: 'breaker_open', threshold: -1, channels: { webhooks: [rx.hookUrl] } },
    });
    assert.equal(sentinel.status, 201, sentinel.text);
    await until('the sentinel fired', () => rx.hooks.some((h) => h.json?.type === 'alert.fired' && h.json.data.rule_id === sentinel.json.id));
    assert.equal(hooksOf('alert.fired').length, 2);
    assert.equal((await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`)).json.state, 'firing');
    assert.equal((await ctx.gw.adminFetch(`/v1/organization/alerts?state=firing`)).json.data.filter((a) => a.rule_id === ctx.ruleId).length, 1);
});

test('modifying and deleting a rule: merged, validated whole, audited; then 404', { timeout: 30000 * SLOW }, async () => {
    const read = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`);
    // What was read may be sent back with changes; the read-only members are ignored.
    const mod = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`, { body: { ...read.json, threshold: 0.9, channels: { webhooks: [rx.hookUrl] } } });
    assert.equal(mod.status, 200, mod.text);
    assert.equal(mod.json.threshold, 0.9);
    assert.equal(mod.json.created_at, read.json.created_at);
    assert.equal(mod.json.name, 'chat errors');
    assert.deepEqual(mod.json.channels, { webhooks: [rx.hookUrl], emails: [] });
    const partial = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`, { body: { min_requests: 5 } });
    assert.equal(partial.json.min_requests, 5);
    assert.equal(partial.json.threshold, 0.9);
    const bad = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`, { body: { metric: 'breaker_open', condition: 'change' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.param, 'condition');
    assert.equal((await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`)).json.metric, 'error_rate', 'a refused change changes nothing');
    const list = await ctx.gw.adminFetch('/v1/organization/alert_rules');
    assert.equal(list.status, 200);
    assert.ok(list.json.data.some((r) => r.id === ctx.ruleId && r.min_requests === 5));

    // A reader reads rules and the outbox without their targets, and cannot write.
    const inv = await ctx.gw.adminFetch('/v1/organization/invites', { body: { email: 'alerts-reader@example.com', role: 'reader' } });
    assert.equal(inv.status, 200, inv.text);
    const acc = await ctx.gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.json.token } });
    assert.equal(acc.status, 200, acc.text);
    const reader = acc.json.admin_api_key.value;
    ctx.gw.clientKeys.push(reader);
    const seen = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`, { key: reader });
    assert.equal(seen.status, 200, seen.text);
    assert.deepEqual(seen.json.channels, { webhooks: ['redacted'], emails: [] });
    const notes = await ctx.gw.adminFetch('/v1/organization/notifications?limit=100', { key: reader });
    assert.ok(notes.json.data.length > 0);
    assert.ok(notes.json.data.every((n) => n.target === 'redacted'));
    const denied = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`, { key: reader, body: { threshold: 0.1 } });
    assert.equal(denied.status, 403, denied.text);

    const r = await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`, { method: 'DELETE' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json, { object: 'alert_rule.deleted', id: ctx.ruleId, deleted: true });
    assert.equal((await ctx.gw.adminFetch(`/v1/organization/alert_rules/${ctx.ruleId}`)).status, 404);
    const audit = await ctx.gw.adminFetch('/v1/organization/audit_logs?limit=50');
    const types = audit.json.data.filter((e) => JSON.stringify(e).includes(ctx.ruleId)).map((e) => e.type);
    assert.ok(types.includes('alert_rule.created') && types.includes('alert_rule.updated') && types.includes('alert_rule.deleted'), JSON.stringify(types));
});

test('a p95 latency rule fires on slow answers and resolves once the window has moved on', { timeout: 60000 * SLOW }, async () => {
    const rule = await ctx.gw.adminFetch('/v1/organization/alert_rules', {
        body: { name: 'slow chat', model: 'gpt-4o-mini', metric: 'p95_latency_ms', threshold: 200, window_seconds: 60, min_requests: 2, channels: { webhooks: [rx.hookUrl] } },
    });
    assert.equal(rule.status, 201, rule.text);
    const of = (type) => rx.hooks.filter((h) => h.json?.type === type && h.json.data.rule_id === rule.json.id);
    // The upstream holds its first byte 300 ms: every latency is above 200 ms.
    for (let i = 0; i < 2; i++) assert.equal(await chat('slow-first-byte'), 200);
    await until('the latency alert', () => of('alert.fired').length >= 1);
    assert.ok(of('alert.fired')[0].json.data.value > 200, JSON.stringify(of('alert.fired')[0].json.data));
    // No traffic after: once the window has moved past the slow answers, it resolves.
    await moveClock(120000);
    await until('the latency alert resolved', () => of('alert.resolved').length >= 1);
    assert.equal(of('alert.fired').length, 1);
    assert.equal(of('alert.resolved').length, 1);
    assert.equal((await ctx.gw.adminFetch(`/v1/organization/alert_rules/${rule.json.id}`, { method: 'DELETE' })).status, 200);
});

test('a spend_forecast rule fires when the month-end forecast passes the budget; its webhook is signed', { timeout: 60000 * SLOW }, async () => {
    const p = await ctx.gw.adminFetch('/v1/organization/projects', { body: { name: 'alerts-spend' } });
    assert.equal(p.status, 200, p.text);
    const projectId = p.json.id;
    const key = await ctx.gw.createKey('alerts-spend', 'spend');
    // The project's budget signs the alert webhooks of rules scoped to it.
    const b = await ctx.gw.adminFetch(`/v1/organization/projects/${projectId}/budget`, {
        body: { monthly_limit_micros: 1000, webhook_url: `${rx.hookUrl}/budget`, webhook_secret: 'env:TG_ALERT_SECRET' },
    });
    assert.equal(b.status, 200, b.text);
    // Ten days into a 31-day month: spend s projects to s * 3.1.
    ctx.offsetMs = Date.UTC(2027, 0, 11) - Date.now();
    const c = await ctx.gw.adminFetch('/v1/organization/_test/clock', { body: { now_ms: Date.UTC(2027, 0, 11) } });
    assert.equal(c.status, 200, c.text);
    const rule = await ctx.gw.adminFetch('/v1/organization/alert_rules', {
        body: { name: 'spend pace', project_id: 'alerts-spend', metric: 'spend_forecast', threshold: 1, channels: { webhooks: [rx.hookUrl] } },
    });
    assert.equal(rule.status, 201, rule.text);
    assert.equal(rule.json.project_id, projectId, 'a project name is taken and stored as its id');
    const spend = async () => {
        const r = await ctx.gw.rawFetch('/v1/chat/completions', {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'spend-model', max_tokens: 5, messages: [{ role: 'user', content: 'say hi' }] }),
        });
        assert.equal(r.status, 200, r.text);
    };
    // 300 micro-dollars project to about 930: below the budget.
    for (let i = 0; i < 3; i++) await spend();
    const fires = () => rx.hooks.filter((h) => h.json?.type === 'alert.fired' && h.json.data.rule_id === rule.json.id);
    // 400 project to about 1240: above.
    await spend();
    await until('the spend_forecast alert', () => fires().length >= 1);
    const h = fires()[0];
    assert.ok(h.json.data.value > 1.2 && h.json.data.value <= 1.24, `forecast share ${h.json.data.value}`);
    assert.equal(h.json.data.metric, 'spend_forecast');
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(h.signature || '');
    assert.ok(m, `signature header: ${h.signature}`);
    const want = crypto.createHmac('sha256', SECRET).update(`${m[1]}.${h.body}`).digest('hex');
    assert.equal(m[2], want);
    assert.equal(fires().length, 1);
});

test('shutdown: SIGTERM exits 0, no sanitizer report, no secret in the logs', { timeout: 60000 * SLOW }, async () => {
    await ctx.gw.stopAndCheck();
});
