// notify.test.mjs: spend alerts end to end (issue 4, test (d)). A project with a small budget,
// a webhook (HMAC secret from env:) and a notify address; a real SMTP server (npm
// smtp-server) and a real HTTP receiver in this process. Traffic crosses 50%, then 80%, then
// (after a gateway restart on the same data directory) 100% of the budget. Each threshold must
// arrive exactly once by webhook (signature verified) and once per e-mail recipient (the org
// owner and the budget's address); the first webhook is answered 500 and must be retried and
// delivered once; at 100% the automatic increase raises the limit once (audited, seen by
// admission at once) and notifies.
//
// The model "notify-model" is priced only for output (20 USD per 1M tokens) and every request
// asks for max_tokens 5, which is what the scripted upstream reports for "say hi": the cost
// bound and the real cost are both 100 micro-dollars, so the budget's spend moves in exact
// steps of 10% of 1000 micro-dollars.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startUpstream } from './lib/upstream.mjs';
import { startGateway, stopRestarted, newUpstreamKey, newAzureKey, SLOW } from './lib/gateway.mjs';
import { Receivers } from './lib/receivers.mjs';

const SECRET = 'whsec_' + crypto.randomBytes(12).toString('hex');
const PRICE = { 'notify-model': { input: '0', cached_input: '0', output: '20' } };
const STEP = 100; // micro-dollars per request
const LIMIT = 1000;
const OWNER = 'owner@localhost'; // the first start's owner user (TOLLGATE_ADMIN_EMAIL unset)
const OPS = 'ops@example.com';

const rx = new Receivers({ hookStatuses: [500] }); // the first webhook is answered 500
const ctx = {
    upstreamKey: newUpstreamKey(),
    azureKey: newAzureKey(),
};

// What arrived, for the message of a wait that timed out.
function arrived() {
    return `hooks: ${JSON.stringify(rx.hooks.map((h) => [h.status, h.json?.type, h.json?.data?.threshold_pct]))}; mails: ${JSON.stringify(rx.mails.map((m) => [m.to, m.headers['x-tollgate-event'], m.headers.subject]))}\n${ctx.gw?.logs().slice(-4000)}`;
}

// Resolves once cond() holds (checked on every delivery), or fails after the deadline.
function until(what, cond) {
    return rx.until(what, cond, arrived);
}

function gatewayOpts(extra = {}) {
    return {
        upstream: ctx.up,
        upstreamKey: ctx.upstreamKey,
        azureKey: ctx.azureKey,
        prices: PRICE,
        env: { TG_NOTIFY_SECRET: SECRET },
        extraYaml: rx.notificationsYaml(),
        ...extra,
    };
}

before(async () => {
    ctx.up = await startUpstream({ apiKey: ctx.upstreamKey, azureKey: ctx.azureKey });
    await rx.start('/hook');
    ctx.gw = await startGateway(gatewayOpts());
    ctx.first = ctx.gw;
});

after(async () => {
    // The restarted gateway shares the first one's data directory: removed once both are clean.
    await stopRestarted(ctx.first, ctx.gw);
    await rx.close();
    await ctx.up.close();
});

// One request costing exactly STEP; returns the HTTP status.
async function spend(n) {
    const statuses = [];
    for (let i = 0; i < n; i++) {
        const r = await ctx.gw.rawFetch('/v1/chat/completions', {
            method: 'POST',
            headers: { authorization: `Bearer ${ctx.key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'notify-model', max_tokens: 5, messages: [{ role: 'user', content: 'say hi' }] }),
        });
        if (r.status === 200) assert.equal(r.json.usage.completion_tokens, 5, 'the upstream reports the 5 tokens the test prices');
        statuses.push(r.status);
    }
    return statuses;
}

function verified(h) {
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(h.signature || '');
    if (!m) return false;
    const want = crypto.createHmac('sha256', SECRET).update(`${m[1]}.${h.body}`).digest('hex');
    return crypto.timingSafeEqual(Buffer.from(want), Buffer.from(m[2])) && Math.abs(Date.now() / 1000 - Number(m[1])) < 600;
}

// Threshold webhooks of the test project that were answered 200, by percentage.
function deliveredHooks(type, pct) {
    return rx.hooks.filter(
        (h) => h.status === 200 && h.json?.type === type && h.json.data.id === ctx.projectId && (pct === undefined || h.json.data.threshold_pct === pct),
    );
}

function mailsFor(type, pct, to) {
    return rx.mails.filter(
        (m) =>
            m.to === to &&
            m.headers['x-tollgate-event'] === type &&
            (pct === undefined || m.headers.subject.includes(`reached ${pct}% of its monthly budget`)) &&
            m.headers.subject.includes('project notify-e2e'),
    );
}

function thresholdArrived(pct) {
    return deliveredHooks('budget.threshold', pct).length >= 1 && mailsFor('budget.threshold', pct, OWNER).length >= 1 && mailsFor('budget.threshold', pct, OPS).length >= 1;
}

function assertOnce(pct) {
    const hooks = deliveredHooks('budget.threshold', pct);
    assert.equal(hooks.length, 1, `one delivered webhook for ${pct}%`);
    assert.ok(verified(hooks[0]), `the ${pct}% webhook's signature verifies`);
    assert.equal(hooks[0].json.data.limit_micros, LIMIT);
    assert.ok(hooks[0].json.data.spend_micros >= (LIMIT * pct) / 100);
    assert.match(hooks[0].json.id, /^evt_[0-9a-f]{24}$/);
    for (const to of [OWNER, OPS]) assert.equal(mailsFor('budget.threshold', pct, to).length, 1, `one ${pct}% e-mail to ${to}`);
}

test('setup: a project with a 1000 micro-dollar budget, a signed webhook and a notify address', { timeout: 30000 * SLOW }, async () => {
    const p = await ctx.gw.adminFetch('/v1/organization/projects', { body: { name: 'notify-e2e' } });
    assert.equal(p.status, 200, p.text);
    ctx.projectId = p.json.id;
    ctx.key = await ctx.gw.createKey('notify-e2e', 'notify');
    const b = await ctx.gw.adminFetch(`/v1/organization/projects/${ctx.projectId}/budget`, {
        body: {
            monthly_limit_micros: LIMIT,
            webhook_url: rx.hookUrl,
            webhook_secret: 'env:TG_NOTIFY_SECRET',
            notify_emails: [OPS],
            auto_increase: { at_pct: 100, by_micros: 500, max_micros: 1500 },
        },
    });
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.monthly_limit_micros, LIMIT);
    assert.deepEqual(b.json.thresholds_pct, [50, 80, 100]);
});

test('50%: webhook retried after a 500 and delivered once, signed; one e-mail per recipient', { timeout: 30000 * SLOW }, async () => {
    assert.deepEqual(await spend(4), [200, 200, 200, 200]);
    assert.deepEqual(await spend(1), [200]);
    await until('the 50% notifications', () => thresholdArrived(50));
    // The receiver answered the first delivery 500: the same event came again (same id).
    const all50 = rx.hooks.filter((h) => h.json?.type === 'budget.threshold' && h.json.data.threshold_pct === 50);
    assert.deepEqual(
        all50.map((h) => h.status),
        [500, 200],
    );
    assert.equal(all50[0].json.id, all50[1].json.id);
    assert.equal(all50[0].body, all50[1].body, 'a retry sends the same body');
    assertOnce(50);
    const mail = mailsFor('budget.threshold', 50, OPS)[0];
    assert.match(mail.headers.from, /alerts@tollgate\.test/);
    assert.match(mail.text, /Spend this month: \$0\.0005\r?\n/); // 500 micro-dollars
    assert.match(mail.text, /Monthly budget:\s+\$0\.001\r?\n/);
    assert.equal(mail.headers['x-tollgate-event-id'], all50[1].json.id, 'the e-mail names the same event');
    assert.equal(deliveredHooks('budget.threshold', 80).length, 0, 'not yet 80%');
});

test('80%: once on each channel', { timeout: 30000 * SLOW }, async () => {
    assert.deepEqual(await spend(3), [200, 200, 200]);
    await until('the 80% notifications', () => thresholdArrived(80));
    assertOnce(80);
    assertOnce(50);
    assert.equal(deliveredHooks('budget.threshold', 100).length, 0, 'not yet 100%');
});

test('restart on the same data: nothing repeated; 100% arrives once; the automatic increase raises the limit once and notifies', { timeout: 60000 * SLOW }, async () => {
    await ctx.gw.stopAndCheck();
    ctx.gw = await startGateway(gatewayOpts({ dataDir: ctx.first.dataDir, adminKey: ctx.first.adminKey }));
    ctx.gw.clientKeys.push(ctx.key);

    // Spend survived the restart (seeded from the ledger): two more requests reach 100%.
    assert.deepEqual(await spend(2), [200, 200]);
    await until('the 100% notifications and the increase', () => thresholdArrived(100) && deliveredHooks('budget.increased').length >= 1 && mailsFor('budget.increased', undefined, OWNER).length >= 1 && mailsFor('budget.increased', undefined, OPS).length >= 1);
    // Every row queued in the tick that decided 100% was delivered before or with it: a
    // repeated 50% or 80% would be here by now.
    assertOnce(50);
    assertOnce(80);
    assertOnce(100);

    const inc = deliveredHooks('budget.increased');
    assert.equal(inc.length, 1);
    assert.ok(verified(inc[0]));
    assert.equal(inc[0].json.data.previous_limit_micros, LIMIT);
    assert.equal(inc[0].json.data.limit_micros, 1500);
    assert.match(mailsFor('budget.increased', undefined, OPS)[0].headers.subject, /monthly budget raised to \$0\.0015$/);

    const b = await ctx.gw.adminFetch(`/v1/organization/projects/${ctx.projectId}/budget`);
    assert.equal(b.status, 200, b.text);
    assert.equal(b.json.monthly_limit_micros, 1500);
    const audit = await ctx.gw.adminFetch(`/v1/organization/audit_logs?event_types[]=budget.updated&project_ids[]=${ctx.projectId}&limit=10`);
    assert.equal(audit.status, 200, audit.text);
    const bySystem = audit.json.data.filter((e) => JSON.stringify(e.actor).includes('system'));
    assert.equal(bySystem.length, 1, `one budget.updated by the system: ${audit.text}`);

    // Admission sees the new limit at once: five more requests fit, the sixth is refused.
    assert.deepEqual(await spend(5), [200, 200, 200, 200, 200]);
    assert.deepEqual(await spend(1), [429]);
    // At the ceiling: no second increase. A fourth threshold (90%, already crossed) is a new
    // event; once it arrives the notifier has decided this level at 100% of 1500 at least once.
    const t = await ctx.gw.adminFetch(`/v1/organization/projects/${ctx.projectId}/budget`, { body: { thresholds_pct: [50, 80, 90, 100] } });
    assert.equal(t.status, 200, t.text);
    await until('the 90% notifications', () => thresholdArrived(90));
    const b2 = await ctx.gw.adminFetch(`/v1/organization/projects/${ctx.projectId}/budget`);
    assert.equal(b2.json.monthly_limit_micros, 1500);
    assert.equal(deliveredHooks('budget.increased').length, 1);
    assertOnce(100);
});

test('shutdown: SIGTERM exits 0, no sanitizer report, no secret in the logs', { timeout: 60000 * SLOW }, async () => {
    const logs = ctx.gw.logs() + ctx.first.logs();
    assert.ok(!logs.includes(SECRET), 'the webhook secret is never logged');
    await ctx.gw.stopAndCheck();
});
