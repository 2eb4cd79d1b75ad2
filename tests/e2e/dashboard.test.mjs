// dashboard.test.mjs: the web dashboard at /dashboard, driven in headless Chromium (Debian's
// chromium through playwright-core): its assets and security headers; an owner signs in, sees
// the usage of traffic just sent with the openai SDK (requests, tokens, cost to the
// micro-dollar), creates a key and revokes it through the page (the SDK proves the key worked,
// then stopped); a reader sees no billing controls; a revoked admin key gets a clear message.
// Every page request must stay on the gateway's origin. Screenshots of each step go to
// tests/e2e/artifacts/dashboard-*.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';
import { expectedCost, TG_KEY_RE, SLOW } from './lib/gateway.mjs';

const ctx = useGateway();
const ART = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');
const UI = { timeout: 60000 * SLOW };
const WAIT = 15000 * SLOW; // bound for one UI condition

let browser = null;

before(async () => {
    fs.mkdirSync(ART, { recursive: true });
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
});

after(async () => {
    if (browser) await browser.close();
});

// Integer micro-dollars as the page must show them (written apart from web/app.js on purpose).
function dollars(micros) {
    const whole = Math.floor(micros / 1e6);
    let frac = String(micros % 1e6).padStart(6, '0');
    while (frac.length > 2 && frac.endsWith('0')) frac = frac.slice(0, -1);
    return `$${whole.toLocaleString('en-US')}.${frac}`;
}

let seq = 0;

// A new user of the given role with an admin key (through an invite, as users.test.mjs).
async function join(gw, role, projects = []) {
    const email = `dash${++seq}-${Date.now()}@example.com`;
    const inv = await gw.adminFetch('/v1/organization/invites', { body: { email, role, projects } });
    assert.equal(inv.status, 200, inv.text);
    const acc = await gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.json.token, name: `Dash ${seq}` } });
    assert.equal(acc.status, 200, acc.text);
    gw.clientKeys.push(acc.json.admin_api_key.value);
    return acc.json.admin_api_key.value;
}

// A page in a fresh context (its own sessionStorage) that records every request it makes.
async function openPage(gw) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const requests = [];
    const errors = [];
    page.on('request', (r) => requests.push(r.url()));
    page.on('pageerror', (e) => errors.push(String(e)));
    // A blocked inline script or style, or a load from elsewhere, is reported on the console.
    page.on('console', (m) => {
        if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) errors.push(m.text());
    });
    page.setDefaultTimeout(WAIT);
    await page.goto(`${gw.url}/dashboard`);
    return {
        page,
        requests,
        errors,
        async close() {
            await context.close();
        },
        // Every request went to the gateway (data: URLs never reach the network).
        foreign() {
            return requests.filter((u) => !u.startsWith('data:') && new URL(u).origin !== gw.url);
        },
    };
}

async function signIn(page, key) {
    await page.getByTestId('signin-key').fill(key);
    await page.getByTestId('signin-submit').click();
}

async function shot(page, name) {
    await page.screenshot({ path: path.join(ART, `dashboard-${name}.png`), fullPage: true });
}

// Waits until every panel of the view has settled (loaded, unavailable or failed).
async function settled(page) {
    await page.waitForFunction(() => {
        const panels = [...document.querySelectorAll('#view section.panel')].filter((p) => !p.dataset.testid.endsWith('-create'));
        return panels.length > 0 && panels.every((p) => p.dataset.state);
    });
    return page.$$eval('#view section.panel[data-state="error"]', (ps) => ps.map((p) => `${p.dataset.testid}: ${p.textContent}`));
}

async function goSection(page, id) {
    await page.getByTestId(`nav-${id}`).click();
    await page.waitForFunction((s) => document.getElementById('view').dataset.section === s, id);
    return settled(page);
}

async function usageOf(gw, project) {
    const q = `start_time=${Math.floor(Date.now() / 1000) - 3600}&bucket_width=1d&group_by=project_id&limit=2`;
    const r = await gw.adminFetch(`/v1/organization/usage/completions?${q}`);
    assert.equal(r.status, 200, r.text);
    return r.json.data.flatMap((b) => b.results).filter((x) => x.project_id === project.id).reduce((n, x) => n + x.num_model_requests, 0);
}

test('the page and its assets: content types, security headers, ETags, 404s', T, async () => {
    const { gw } = ctx;
    for (const p of ['/dashboard', '/dashboard/', '/dashboard/index.html']) {
        const r = await gw.rawFetch(p);
        assert.equal(r.status, 200);
        assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
        const csp = r.headers.get('content-security-policy');
        for (const d of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'"]) {
            assert.ok(csp.includes(d), `CSP lacks ${d}: ${csp}`);
        }
        assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
        assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
        // No inline script or style (the CSP would block them), nothing from elsewhere.
        assert.doesNotMatch(r.text, /<script(?![^>]*\bsrc=)[^>]*>/);
        assert.doesNotMatch(r.text, /<style|\sstyle=/);
        assert.doesNotMatch(r.text, /(?:src|href)="(?:https?:)?\/\//);
    }
    const types = {
        'app.js': 'text/javascript; charset=utf-8',
        'app.css': 'text/css; charset=utf-8',
        'uPlot.iife.min.js': 'text/javascript; charset=utf-8',
        'uPlot.min.css': 'text/css; charset=utf-8',
    };
    for (const [name, type] of Object.entries(types)) {
        const r = await gw.rawFetch(`/dashboard/${name}`);
        assert.equal(r.status, 200, name);
        assert.equal(r.headers.get('content-type'), type, name);
        assert.ok(r.text.length > 100, name);
        const etag = r.headers.get('etag');
        assert.match(etag, /^"[0-9a-f]{16}"$/);
        assert.equal(r.headers.get('cache-control'), 'no-cache');
        const again = await gw.rawFetch(`/dashboard/${name}`, { headers: { 'if-none-match': etag } });
        assert.equal(again.status, 304, name);
        assert.equal(again.text, '');
        const other = await gw.rawFetch(`/dashboard/${name}`, { headers: { 'if-none-match': '"0000000000000000"' } });
        assert.equal(other.status, 200, name);
    }
    const missing = await gw.rawFetch('/dashboard/nope.js');
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error.type, 'invalid_request_error');
    assert.ok(missing.headers.get('content-security-policy'));
    const me = await gw.adminFetch('/v1/organization/me');
    assert.equal(me.status, 200, me.text);
    assert.equal(me.json.object, 'organization.me');
    assert.equal(me.json.key.role, 'owner');
    assert.match(me.json.key.redacted, /^tg-.+\.\.\..+$/);
    assert.ok(!me.text.includes(gw.adminKey));
    assert.equal((await gw.adminFetch('/v1/organization/me', { key: null })).status, 401);
});

test('owner: sees the traffic just sent, creates and revokes a key through the page', UI, async () => {
    const { gw } = ctx;
    const name = `dash-${Date.now()}`;
    const made = await gw.adminFetch('/v1/organization/projects', { body: { name } });
    assert.equal(made.status, 200, made.text);
    const project = made.json;
    const client = gw.client(await gw.createKey(name, 'traffic'));
    const sent = { requests: 0, input: 0, output: 0, cost: 0 };
    for (const text of ['hello dashboard', 'what does it cost', 'one more request please']) {
        const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: msg(text) });
        sent.requests++;
        sent.input += r.usage.prompt_tokens;
        sent.output += r.usage.completion_tokens;
        sent.cost += expectedCost('gpt-4o-mini', { prompt_tokens: r.usage.prompt_tokens, cached_tokens: r.usage.prompt_tokens_details.cached_tokens, completion_tokens: r.usage.completion_tokens });
    }
    // The ledger is written off the request path: wait (bounded) until the usage API has it all.
    const end = Date.now() + 10000 * SLOW;
    while ((await usageOf(gw, project)) < sent.requests) {
        assert.ok(Date.now() < end, 'the usage API never counted the traffic');
        await new Promise((r) => setTimeout(r, 100));
    }

    const ui = await openPage(gw);
    const { page } = ui;
    try {
        await shot(page, '01-signin');
        await signIn(page, gw.adminKey);
        await page.getByTestId('role').filter({ hasText: 'owner' }).waitFor();
        assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.dashboard.key')), gw.adminKey);
        assert.ok(!page.url().includes(gw.adminKey));
        assert.deepEqual(await page.evaluate(() => document.cookie), '');
        assert.deepEqual(await settled(page), []);
        const row = page.locator(`[data-testid="project-row"][data-project="${name}"]`);
        assert.equal(await row.locator('[data-col="spend"]').textContent(), dollars(sent.cost));
        assert.ok((await page.getByTestId('budget-edit').count()) > 0, 'owners have budget controls');
        await shot(page, '02-owner-overview');
        // An owner sets the project's budget in place: dollars typed, micro-dollars stored.
        await row.getByTestId('budget-edit').click();
        await row.getByTestId('budget-input').fill('12.5');
        await row.getByTestId('budget-save').click();
        await page.locator(`[data-testid="project-row"][data-project="${name}"] [data-col="budget"]`, { hasText: '$12.50' }).waitFor();
        const budget = await gw.adminFetch(`/v1/organization/projects/${project.id}/budget`);
        assert.equal(budget.json.monthly_limit_micros, 12500000, budget.text);

        assert.deepEqual(await goSection(page, 'usage'), []);
        const urow = page.locator(`[data-testid="usage-row"][data-group="${name}"]`);
        assert.equal(await urow.locator('[data-col="requests"]').textContent(), String(sent.requests));
        assert.equal(await urow.locator('[data-col="input"]').textContent(), sent.input.toLocaleString('en-US'));
        assert.equal(await urow.locator('[data-col="output"]').textContent(), sent.output.toLocaleString('en-US'));
        assert.equal(await urow.locator('[data-col="cost"]').textContent(), dollars(sent.cost));
        await page.locator('[data-testid="chart-cost"] canvas').waitFor();
        await page.locator('[data-testid="chart-requests"] canvas').waitFor();
        await shot(page, '03-owner-usage');
        await page.getByTestId('usage-range').selectOption('7d');
        await settled(page);
        const week = page.locator(`[data-testid="usage-row"][data-group="${name}"] [data-col="requests"]`);
        assert.equal(await week.textContent(), String(sent.requests));
        await page.getByTestId('usage-group').selectOption('model');
        await settled(page);
        await page.locator('[data-testid="usage-row"][data-group="gpt-4o-mini"]').waitFor();

        assert.deepEqual(await goSection(page, 'keys'), []);
        await page.getByTestId('keys-project').selectOption({ label: name });
        await page.getByTestId('panel-keys').getByText('traffic').waitFor();
        await page.getByTestId('key-create-name').fill('made-in-the-page');
        await page.getByTestId('key-create').click();
        const value = (await page.getByTestId('key-created-value').textContent()).trim();
        assert.match(value, TG_KEY_RE);
        gw.clientKeys.push(value);
        const newRow = page.locator('[data-testid="key-row"][data-name="made-in-the-page"]');
        await newRow.waitFor();
        await shot(page, '04-owner-key-created');
        const ok = await gw.client(value).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('from the new key') });
        assert.ok(ok.choices[0].message.content.length > 0);

        await newRow.getByTestId('key-revoke').click();
        await shot(page, '05-owner-key-revoke-confirm');
        await newRow.getByTestId('key-revoke-confirm').click();
        await page.locator('[data-testid="key-row"][data-name="made-in-the-page"] [data-col="status"]', { hasText: 'revoked' }).waitFor();
        await shot(page, '06-owner-key-revoked');
        await assert.rejects(
            gw.client(value, { maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o-mini', messages: msg('after revoke') }),
            (e) => e.status === 401 && /revoked/.test(e.message),
        );

        // Refresh shows the spend of the request just made with the new key (the ledger is
        // written off the request path: refresh until it shows, bounded).
        const extra = expectedCost('gpt-4o-mini', { prompt_tokens: ok.usage.prompt_tokens, cached_tokens: ok.usage.prompt_tokens_details.cached_tokens, completion_tokens: ok.usage.completion_tokens });
        assert.deepEqual(await goSection(page, 'overview'), []);
        const spend = page.locator(`[data-testid="project-row"][data-project="${name}"] [data-col="spend"]`);
        const until = Date.now() + 10000 * SLOW;
        while ((await spend.textContent()) !== dollars(sent.cost + extra)) {
            assert.ok(Date.now() < until, `spend shows ${await spend.textContent()}, want ${dollars(sent.cost + extra)}`);
            await page.getByTestId('refresh').click();
            assert.deepEqual(await settled(page), []);
        }

        assert.deepEqual(await goSection(page, 'health'), []);
        const deployments = await page.getByTestId('deployment-row').count();
        assert.ok(deployments > 0, 'the deployments table lists the configured deployments');
        await shot(page, '07-owner-health');
        assert.deepEqual(await goSection(page, 'notifications'), []);
        await shot(page, '08-owner-notifications');
        assert.deepEqual(await goSection(page, 'audit'), []);
        await page.locator('[data-testid="audit-row"]', { hasText: 'api_key.deleted' }).first().waitFor();
        await shot(page, '09-owner-audit');

        await page.getByTestId('signout').click();
        await page.getByTestId('signin-form').waitFor();
        assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.dashboard.key')), null);
        assert.deepEqual(ui.errors, []);
        assert.deepEqual(ui.foreign(), []);
        assert.ok(ui.requests.some((u) => u.endsWith('/dashboard/uPlot.iife.min.js')));
    } finally {
        await ui.close();
    }
});

test('monitor panels: a firing alert on the overview, the model in health, the rule in notifications', UI, async () => {
    const { gw } = ctx;
    const ruleName = `dash failing ${Date.now()}`;
    const rule = await gw.adminFetch('/v1/organization/alert_rules', {
        body: { name: ruleName, model: 'fail-500', metric: 'error_rate', condition: 'above', threshold: 0.5, window_seconds: 60, min_requests: 2 },
    });
    assert.equal(rule.status, 201, rule.text);
    const client = gw.client(await gw.createKey('staging', 'dash-failing'), { maxRetries: 0 });
    for (let i = 0; i < 3; i++) {
        await assert.rejects(client.chat.completions.create({ model: 'fail-500', messages: msg(`fail ${i}`) }), (e) => e.status >= 500);
    }
    // Rules are evaluated on the notifier's tick: wait (bounded) until the API says it fired.
    const end = Date.now() + 20000 * SLOW;
    for (;;) {
        const r = await gw.adminFetch('/v1/organization/alerts?state=firing&limit=100');
        assert.equal(r.status, 200, r.text);
        if (r.json.data.some((a) => a.rule_id === rule.json.id)) break;
        assert.ok(Date.now() < end, `the rule never fired: ${r.text}`);
        await new Promise((res) => setTimeout(res, 200));
    }

    const ui = await openPage(gw);
    const { page } = ui;
    try {
        await signIn(page, gw.adminKey);
        await page.getByTestId('role').filter({ hasText: 'owner' }).waitFor();
        assert.deepEqual(await settled(page), []);
        await page.locator('[data-testid="alert-row"]', { hasText: ruleName }).waitFor();
        await shot(page, '10-owner-overview-alert');
        assert.deepEqual(await goSection(page, 'health'), []);
        const row = page.locator('[data-testid="health-row"]', { hasText: 'fail-500' });
        await row.waitFor();
        assert.match(await row.locator('[data-col="error_rate"]').textContent(), /^100\.0% \(3\)$/);
        await shot(page, '11-owner-health-errors');
        assert.deepEqual(await goSection(page, 'notifications'), []);
        await page.locator('[data-testid="rule-row"]', { hasText: ruleName }).getByText('firing').waitFor();
        await shot(page, '12-owner-notifications-rule');
        assert.deepEqual(ui.errors, []);
        assert.deepEqual(ui.foreign(), []);
    } finally {
        await ui.close();
    }
});

test('reader: no billing controls, no usage or audit pages; keys of their project', UI, async () => {
    const { gw } = ctx;
    const key = await join(gw, 'reader', [{ id: 'development', role: 'member' }]);
    const ui = await openPage(gw);
    const { page } = ui;
    try {
        await signIn(page, key);
        await page.getByTestId('role').filter({ hasText: 'reader' }).waitFor();
        assert.deepEqual(await settled(page), []);
        await page.locator('[data-testid="project-row"][data-project="development"]').waitFor();
        assert.equal(await page.getByTestId('project-row').count(), 1, 'a reader sees only their projects');
        assert.equal(await page.getByTestId('budget-edit').count(), 0);
        assert.equal(await page.getByTestId('budget-input').count(), 0);
        assert.equal(await page.getByTestId('nav-usage').count(), 0);
        assert.equal(await page.getByTestId('nav-audit').count(), 0);
        assert.equal(await page.getByTestId('org-forecast').count(), 0);
        await shot(page, '13-reader-overview');
        await page.goto(`${gw.url}/dashboard#usage`);
        await page.getByTestId('owner-only').waitFor();
        assert.equal(await page.getByTestId('panel-usage').count(), 0);
        await page.goto(`${gw.url}/dashboard#audit`);
        await page.getByTestId('owner-only').waitFor();
        assert.equal(await page.getByTestId('panel-audit').count(), 0);
        await page.goto(`${gw.url}/dashboard#overview`);
        await settled(page);
        assert.deepEqual(await goSection(page, 'keys'), []);
        await page.getByTestId('key-create').waitFor();
        // Their own admin keys: the one in use is marked, a new one is shown once and revoked.
        const adminRows = page.getByTestId('admin-key-row');
        assert.equal(await adminRows.count(), 1, 'a reader sees only their own admin keys');
        assert.equal(await adminRows.first().getByText('this session').count(), 1);
        await page.getByTestId('admin-key-create-name').fill('reader-laptop');
        await page.getByTestId('admin-key-create').click();
        const value = (await page.getByTestId('admin-key-created-value').textContent()).trim();
        assert.match(value, TG_KEY_RE);
        gw.clientKeys.push(value);
        assert.equal((await gw.adminFetch('/v1/organization/me', { key: value })).json.key.role, 'reader');
        const made = page.locator('[data-testid="admin-key-row"][data-name="reader-laptop"]');
        await made.waitFor();
        await shot(page, '14-reader-keys');
        await made.getByTestId('admin-key-revoke').click();
        await made.getByTestId('admin-key-revoke-confirm').click();
        await page.locator('[data-testid="admin-key-row"][data-name="reader-laptop"] [data-col="status"]', { hasText: 'revoked' }).waitFor();
        assert.equal((await gw.adminFetch('/v1/organization/me', { key: value })).status, 401);
        assert.deepEqual(ui.errors, []);
        assert.deepEqual(ui.foreign(), []);
    } finally {
        await ui.close();
    }
});

test('a revoked admin key: sign-in refused with a message, a stored key dropped', UI, async () => {
    const { gw } = ctx;
    const made = await gw.adminFetch('/v1/organization/admin_api_keys', { body: { name: 'dash-revoked' } });
    assert.equal(made.status, 200, made.text);
    gw.clientKeys.push(made.json.value);
    const ui = await openPage(gw);
    const { page } = ui;
    try {
        // Signed in while the key works, then it is revoked: the next load signs out and says why.
        await signIn(page, made.json.value);
        await page.getByTestId('role').filter({ hasText: 'owner' }).waitFor();
        // Nothing in flight when the key goes (a call answered 401 would sign out at once).
        assert.deepEqual(await settled(page), []);
        const del = await gw.adminFetch(`/v1/organization/admin_api_keys/${made.json.id}`, { method: 'DELETE' });
        assert.equal(del.status, 200, del.text);
        await page.reload();
        const err = page.getByTestId('signin-error');
        await err.filter({ hasText: 'revoked' }).waitFor();
        assert.match(await err.textContent(), /This admin key has been revoked/);
        assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.dashboard.key')), null);
        assert.equal(await page.locator('#app').isHidden(), true);
        await shot(page, '15-revoked-key-reload');

        // Typed in at the sign-in screen: refused the same way, nothing stored.
        await signIn(page, made.json.value);
        await page.waitForFunction(() => document.getElementById('signin-error').textContent.includes('revoked'));
        assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.dashboard.key')), null);
        await shot(page, '16-revoked-key-signin');

        // Revoked while the page is open: the next call signs out and says why.
        const second = await gw.adminFetch('/v1/organization/admin_api_keys', { body: { name: 'dash-revoked-live' } });
        assert.equal(second.status, 200, second.text);
        gw.clientKeys.push(second.json.value);
        await signIn(page, second.json.value);
        await page.getByTestId('role').filter({ hasText: 'owner' }).waitFor();
        assert.deepEqual(await settled(page), []);
        const del2 = await gw.adminFetch(`/v1/organization/admin_api_keys/${second.json.id}`, { method: 'DELETE' });
        assert.equal(del2.status, 200, del2.text);
        await page.getByTestId('nav-keys').click();
        await page.getByTestId('signin-error').filter({ hasText: 'This admin key has been revoked' }).waitFor();
        assert.equal(await page.evaluate(() => sessionStorage.getItem('tollgate.dashboard.key')), null);
        await shot(page, '17-revoked-while-open');

        await signIn(page, 'not-a-key');
        await page.waitForFunction(() => /not a valid admin key/.test(document.getElementById('signin-error').textContent));
        const project = await gw.createKey('development', 'dash-project-key');
        await signIn(page, project);
        await page.waitForFunction(() => /cannot open the dashboard/.test(document.getElementById('signin-error').textContent));
        await shot(page, '18-project-key-signin');
        assert.deepEqual(ui.errors, []);
        assert.deepEqual(ui.foreign(), []);
    } finally {
        await ui.close();
    }
});

shutdownTest(ctx);
