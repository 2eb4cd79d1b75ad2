// costs.test.mjs: the Costs API against known traffic (scripted upstream and the mock
// provider): totals equal the ledger's cost sums to the micro-dollar with every grouping and
// filter, line items add up to the ledger and carry the token counts, CSV rows match the JSON;
// usage pages (limits per width, cursors, empty buckets) and CSV; forecasts from rows put into
// the ledger directly (this month's count, last month's do not) against a project budget;
// the price table; owner-only access; the CLI's costs, usage --csv, forecast and cost estimate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { useGateway, shutdownTest, T, msg } from './lib/setup.mjs';

const execFileP = promisify(execFile);
const ctx = useGateway();
const stamp = `${process.pid}-${Date.now().toString(36)}`;
const DAY = 86400;

async function ok(p) {
    const r = await p;
    assert.equal(r.status, 200, r.text);
    return r.json;
}

async function newProject(gw, name) {
    return ok(gw.adminFetch('/v1/organization/projects', { body: { name: `${name}-${stamp}` } }));
}

// Runs `tollgate ARGS` against the gateway with the owner's key.
async function tg(gw, args, key = gw.adminKey) {
    const env = { ...process.env, TOLLGATE_URL: gw.url, TOLLGATE_ADMIN_KEY: key };
    try {
        const { stdout, stderr } = await execFileP(process.env.TOLLGATE_BIN, args, { env, maxBuffer: 1 << 24 });
        return { code: 0, stdout, stderr };
    } catch (e) {
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
}

function sqlite(gw, sql) {
    return execFileP('sqlite3', ['-cmd', '.timeout 5000', gw.dbPath, sql]).then((r) => r.stdout.trim());
}

const sum = (xs, f) => xs.reduce((a, x) => a + f(x), 0);

// Known traffic in two projects, three keys, two models; resolves once every row is in the
// ledger. Shared by the tests below (made once).
let traffic = null;
function makeTraffic() {
    traffic ??= (async () => {
        const { gw } = ctx;
        const a = await newProject(gw, 'costs-a');
        const b = await newProject(gw, 'costs-b');
        const ka1 = await gw.createKeyObject(a.id, 'a1');
        const ka2 = await gw.createKeyObject(a.id, 'a2');
        const kb = await gw.createKeyObject(b.id, 'b');
        const ids = [];
        const chat = async (key, model, text, stream = false) => {
            const c = gw.client(key.value);
            if (stream) {
                const s = await c.chat.completions.create({ model, messages: msg(text), stream: true }).withResponse();
                for await (const _ of s.data);
                ids.push(s.request_id);
            } else {
                ids.push((await c.chat.completions.create({ model, messages: msg(text) }).withResponse()).request_id);
            }
        };
        await chat(ka1, 'gpt-4o-mini', 'costs one two three');
        await chat(ka1, 'gpt-4o-mini', 'costs four five', true);
        await chat(ka2, 'mock-small', 'costs six seven eight nine');
        await chat(kb, 'gpt-4o-mini', 'costs ten');
        await chat(kb, 'mock-small', 'costs eleven twelve', true);
        const rows = [];
        for (const id of ids) rows.push(...(await gw.waitLedger(id)));
        return { a, b, ka1, ka2, kb, rows };
    })();
    return traffic;
}

function startOfToday() {
    return Math.floor(Date.now() / 1000 / DAY) * DAY;
}

function results(page) {
    assert.equal(page.object, 'page');
    return page.data.flatMap((bk) => {
        assert.equal(bk.object, 'bucket');
        assert.equal(bk.end_time - bk.start_time, DAY);
        return bk.results;
    });
}

test('costs: totals equal the ledger sums per project and key, to the micro-dollar', T, async () => {
    const { gw } = ctx;
    const t = await makeTraffic();
    const start = startOfToday() - DAY;
    const ledger = await gw.readLedger();
    const since = ledger.filter((r) => r.time_ms >= start * 1000);

    const all = await ok(gw.adminFetch(`/v1/organization/costs?start_time=${start}`));
    assert.equal(all.has_more, false);
    assert.equal(all.data.length, 2, 'yesterday and today, the empty bucket listed too');
    const r0 = results(all);
    for (const x of r0) {
        assert.equal(x.object, 'organization.costs.result');
        assert.equal(x.amount.currency, 'usd');
        assert.equal(Math.round(x.amount.value * 1e6), x.cost_micros);
        assert.equal(x.line_item, null);
        assert.equal(x.project_id, null);
    }
    assert.equal(sum(r0, (x) => x.cost_micros), sum(since, (r) => r.cost_micros));

    const q = `start_time=${start}&group_by=project_id&group_by=api_key_id&project_ids=${t.a.id}&project_ids[]=${t.b.name}`;
    const byKey = results(await ok(gw.adminFetch(`/v1/organization/costs?${q}`)));
    for (const k of [t.ka1, t.ka2, t.kb]) {
        const mine = byKey.filter((x) => x.api_key_id === k.id);
        assert.equal(mine.length, 1, `one result for ${k.id}`);
        assert.equal(mine[0].project_id, k.project_id);
        assert.equal(mine[0].cost_micros, sum(t.rows.filter((r) => r.key_id === k.id), (r) => r.cost_micros));
        assert.ok(mine[0].cost_micros > 0);
    }
    assert.deepEqual([...new Set(byKey.map((x) => x.project_id))].sort(), [t.a.id, t.b.id].sort());

    // Two keys given, no grouping: one merged result.
    const two = results(await ok(gw.adminFetch(`/v1/organization/costs?start_time=${start}&api_key_ids=${t.ka1.id},${t.kb.id}`)));
    assert.equal(two.length, 1);
    assert.equal(two[0].cost_micros, sum(t.rows.filter((r) => r.key_id === t.ka1.id || r.key_id === t.kb.id), (r) => r.cost_micros));
});

test('costs: line items per model sum to the ledger and carry the tokens', T, async () => {
    const { gw } = ctx;
    const t = await makeTraffic();
    const start = startOfToday() - DAY;
    const res = results(await ok(gw.adminFetch(`/v1/organization/costs?start_time=${start}&group_by=line_item,project_id&project_ids=${t.a.id}`)));
    const rowsA = t.rows.filter((r) => r.project_id === t.a.id);
    assert.equal(sum(res, (x) => x.cost_micros), sum(rowsA, (r) => r.cost_micros));
    for (const model of ['gpt-4o-mini', 'mock-small']) {
        const rm = rowsA.filter((r) => r.model_requested === model);
        const items = res.filter((x) => x.line_item.startsWith(`${model}, `));
        assert.equal(sum(items, (x) => x.cost_micros), sum(rm, (r) => r.cost_micros), model);
        const item = (kind) => items.find((x) => x.line_item === `${model}, ${kind}`);
        assert.equal(item('input').quantity, sum(rm, (r) => r.prompt_tokens - r.cached_tokens));
        assert.equal(item('input').quantity_unit, 'tokens');
        assert.equal(item('output').quantity, sum(rm, (r) => r.completion_tokens));
        const cached = sum(rm, (r) => r.cached_tokens);
        assert.equal(item('cached input')?.quantity ?? 0, cached);
        for (const x of items) assert.equal(x.project_id, t.a.id);
    }
});

test('costs and usage as CSV: a header and one row per bucket and group, same sums', T, async () => {
    const { gw } = ctx;
    const t = await makeTraffic();
    const start = startOfToday() - DAY;
    const q = `start_time=${start}&group_by=project_id,line_item&project_ids=${t.a.id},${t.b.id}`;
    const json = results(await ok(gw.adminFetch(`/v1/organization/costs?${q}`)));
    const csv = await gw.adminFetch(`/v1/organization/costs?${q}&format=csv`);
    assert.equal(csv.status, 200, csv.text);
    assert.match(csv.headers.get('content-type'), /^text\/csv/);
    const lines = csv.text.trimEnd().split('\r\n');
    assert.equal(lines[0], 'start_time,end_time,bucket_start,project_id,api_key_id,line_item,amount_usd,cost_micros,currency,quantity,quantity_unit');
    assert.equal(lines.length - 1, json.length);
    // The line item holds a comma, so it is quoted: parse the simple quoted form.
    const cells = lines.slice(1).map((l) => l.match(/("([^"]|"")*"|[^,]*)(,|$)/g).map((c) => c.replace(/,$/, '').replace(/^"|"$/g, '')));
    assert.equal(sum(cells, (c) => Number(c[7])), sum(json, (x) => x.cost_micros));
    assert.ok(cells.every((c) => c[8] === 'usd' && c[10] === 'tokens' && / (input|cached input|output)$/.test(c[5])));
    assert.match(cells[0][2], /^\d{4}-\d\d-\d\dT00:00:00Z$/);

    const u = await gw.adminFetch(`/v1/organization/usage/completions?start_time=${start}&group_by=api_key_id&api_key_ids=${t.ka1.id}&format=csv`);
    assert.equal(u.status, 200, u.text);
    const ul = u.text.trimEnd().split('\r\n');
    assert.equal(ul[0], 'start_time,end_time,bucket_start,project_id,api_key_id,model,num_model_requests,input_tokens,input_cached_tokens,output_tokens,output_reasoning_tokens,cost_micros');
    assert.equal(ul.length, 2, 'one group in one bucket');
    const f = ul[1].split(',');
    const mine = t.rows.filter((r) => r.key_id === t.ka1.id);
    assert.equal(f[4], t.ka1.id);
    assert.equal(Number(f[6]), mine.length);
    assert.equal(Number(f[7]), sum(mine, (r) => r.prompt_tokens));
    assert.equal(Number(f[11]), sum(mine, (r) => r.cost_micros));
});

test('usage and costs pages: limits per bucket width, next_page cursors, bad input', T, async () => {
    const { gw } = ctx;
    const t = await makeTraffic();
    const hour = Math.floor(Date.now() / 3600000) * 3600;
    const base = `/v1/organization/usage/completions?start_time=${hour - 5 * 3600}&bucket_width=1h&limit=2&group_by=project_id&project_ids=${t.a.id}`;
    const seen = [];
    let page = null;
    let n = 0;
    for (;;) {
        const r = await ok(gw.adminFetch(base + (page ? `&page=${page}` : '')));
        n++;
        for (const bk of r.data) seen.push(bk.start_time);
        if (!r.has_more) {
            assert.equal(r.next_page, null);
            break;
        }
        assert.match(r.next_page, /^page_[0-9a-f]{16}$/);
        page = r.next_page;
        assert.ok(n < 10);
    }
    assert.equal(n, 3);
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5].map((i) => hour - 5 * 3600 + i * 3600));
    const all = await ok(gw.adminFetch(base.replace('limit=2', 'limit=6')));
    const rowsA = t.rows.filter((r) => r.project_id === t.a.id);
    assert.equal(sum(all.data.flatMap((b) => b.results), (x) => x.num_model_requests), rowsA.length);

    const start = startOfToday();
    const bad = [
        [`/v1/organization/costs`, 'start_time'],
        [`/v1/organization/costs?start_time=${start}&bucket_width=1h`, 'bucket_width'],
        [`/v1/organization/costs?start_time=${start}&limit=181`, 'limit'],
        [`/v1/organization/costs?start_time=${start}&group_by=model`, 'group_by'],
        [`/v1/organization/costs?start_time=${start}&page=page_zz`, 'page'],
        [`/v1/organization/costs?start_time=${start}&end_time=${start}`, 'end_time'],
        [`/v1/organization/costs?start_time=${start}&format=xml`, 'format'],
        [`/v1/organization/usage/completions?start_time=${start}&limit=32`, 'limit'],
        [`/v1/organization/usage/completions?start_time=${start}&bucket_width=1h&limit=169`, 'limit'],
        [`/v1/organization/usage/completions?start_time=${start}&bucket_width=1m&limit=1441`, 'limit'],
        [`/v1/organization/usage/completions?start_time=${start - 400 * DAY}&bucket_width=1m&format=csv`, 'end_time'],
    ];
    for (const [url, param] of bad) {
        const r = await gw.adminFetch(url);
        assert.equal(r.status, 400, `${url}: ${r.text}`);
        assert.equal(r.json.error.param, param, url);
    }
    const big = await ok(gw.adminFetch(`/v1/organization/costs?start_time=${start - 200 * DAY}&limit=180`));
    assert.equal(big.data.length, 180);
    assert.equal(big.has_more, true);
});

// Start of this UTC month (the default budget month), Unix seconds.
function monthStart(nowS) {
    const d = new Date(nowS * 1000);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000;
}

test('forecast: month to date from the ledger, linear projection, against the budget', T, async () => {
    const { gw } = ctx;
    const p = await newProject(gw, 'costs-forecast');
    const org = await sqlite(gw, 'SELECT id FROM orgs');
    const ms = monthStart(Math.floor(Date.now() / 1000));
    const insert = (id, timeMs, cost) =>
        `INSERT INTO ledger (request_id, attempt, time_ms, org_id, project_id, key_id, user_id, endpoint, model_requested, provider, deployment, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, cost_micros, status, latency_ms, ttft_ms, is_stream, is_usage_estimated, error) VALUES ('${id}', 1, ${timeMs}, '${org}', '${p.id}', 'key_forecast', '', 'chat.completions', 'gpt-4o-mini', 'up', 'gpt-4o-mini', 10, 0, 10, 0, ${cost}, 200, 1, 1, 0, 0, '');`;
    await sqlite(gw, insert(`req_fc1_${stamp}`, ms * 1000, 1_000_000) + insert(`req_fc2_${stamp}`, ms * 1000 + 1, 2_345_678) + insert(`req_fc0_${stamp}`, ms * 1000 - 1, 5_000_000));

    const f = await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/forecast`));
    assert.equal(f.object, 'organization.costs.forecast');
    assert.equal(f.project_id, p.id);
    assert.equal(f.period_start, ms);
    const d = new Date(ms * 1000);
    assert.equal(f.period_end, Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) / 1000);
    assert.equal(f.month_to_date_micros, 3_345_678, 'last month is not counted');
    // The server's now lies in [as_of, as_of + 1) s; elapsed counts at least an hour.
    const spend = 3_345_678n;
    const len = BigInt(f.period_end - f.period_start) * 1000n;
    const ceil = (a, b) => (a + b - 1n) / b;
    const lo = (x) => (x < 3600000n ? 3600000n : x);
    const eMin = lo(BigInt(f.as_of - ms) * 1000n);
    const eMax = lo(BigInt(f.as_of - ms) * 1000n + 999n);
    assert.ok(BigInt(f.projected_micros) <= ceil(spend * len, eMin) && BigInt(f.projected_micros) >= ceil(spend * len, eMax), JSON.stringify(f));
    assert.ok(BigInt(f.daily_average_micros) <= ceil(spend * 86400000n, eMin) && BigInt(f.daily_average_micros) >= ceil(spend * 86400000n, eMax));
    assert.ok(f.projected_micros >= f.month_to_date_micros);
    assert.equal(f.budget_micros, null);
    assert.equal(f.exceeds_budget, false);

    const set = await gw.adminFetch(`/v1/organization/projects/${p.id}/budget`, { body: { monthly_limit_micros: 3_000_000 } });
    assert.equal(set.status, 200, set.text);
    const f2 = await ok(gw.adminFetch(`/v1/organization/projects/${p.name}/forecast`));
    assert.equal(f2.budget_micros, 3_000_000);
    assert.equal(f2.exceeds_budget, true);
    await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/budget`, { body: { monthly_limit_micros: 1_000_000_000_000 } }));
    const f3 = await ok(gw.adminFetch(`/v1/organization/projects/${p.id}/forecast`));
    assert.equal(f3.exceeds_budget, f3.projected_micros > 1_000_000_000_000);

    // The organization's month counts every project's rows of this month.
    const o = await ok(gw.adminFetch('/v1/organization/forecast'));
    assert.equal(o.project_id, null);
    const ledger = await gw.readLedger();
    const upTo = o.as_of * 1000 + 999;
    assert.equal(o.month_to_date_micros, sum(ledger.filter((r) => r.time_ms >= ms * 1000 && r.time_ms <= upTo), (r) => r.cost_micros));
    assert.equal(typeof o.budget_micros === 'number' || o.budget_micros === null, true);
});

test('prices: the table, and the entry a dated model is priced by', T, async () => {
    const { gw } = ctx;
    const one = await ok(gw.adminFetch('/v1/organization/prices?model=gpt-4o-mini-2024-07-18'));
    assert.equal(one.data.length, 1);
    assert.deepEqual(one.data[0], {
        object: 'organization.price',
        id: 'gpt-4o-mini',
        model: 'gpt-4o-mini',
        input_micros: 1500000,
        cached_input_micros: 750000,
        output_micros: 6000000,
        per_tokens: 1000000,
    });
    const none = await ok(gw.adminFetch('/v1/organization/prices?model=no-such-model'));
    assert.deepEqual(none.data, []);
    const list = await ok(gw.adminFetch('/v1/organization/prices?limit=100'));
    assert.ok(list.data.some((x) => x.model === 'mock-small' && x.output_micros === 400000));
});

test('costs are for owners: readers and project keys are refused, members see their forecast', T, async () => {
    const { gw } = ctx;
    const t = await makeTraffic();
    const inv = await ok(gw.adminFetch('/v1/organization/invites', { body: { email: `costs-${stamp}@example.com`, role: 'reader', projects: [{ id: t.a.id, role: 'member' }] } }));
    const acc = await ok(gw.adminFetch('/v1/organization/invites/accept', { key: null, body: { token: inv.token } }));
    const reader = acc.admin_api_key.value;
    gw.clientKeys.push(reader);
    const start = startOfToday();
    for (const url of [`/v1/organization/costs?start_time=${start}`, '/v1/organization/forecast', `/v1/organization/projects/${t.b.id}/forecast`]) {
        const r = await gw.adminFetch(url, { key: reader });
        assert.equal(r.status, 403, `${url}: ${r.text}`);
        const pk = await gw.adminFetch(url, { key: t.ka1.value });
        assert.ok(pk.status === 401 || pk.status === 403, `${url}: ${pk.status}`);
    }
    await ok(gw.adminFetch(`/v1/organization/projects/${t.a.id}/forecast`, { key: reader }));
    await ok(gw.adminFetch('/v1/organization/prices', { key: reader }));
});

test('CLI: costs table and CSV, usage --csv, forecast, cost estimate', T, async () => {
    const { gw } = ctx;
    const t = await makeTraffic();
    const start = new Date((startOfToday() - DAY) * 1000).toISOString().slice(0, 10);
    const rowsA = t.rows.filter((r) => r.project_id === t.a.id);
    const usd = (m) => `${Math.floor(m / 1e6)}.${String(m % 1e6).padStart(6, '0')}`;

    const table = await tg(gw, ['costs', '--start', start, '--group-by', 'project', '--project', t.a.name]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.trimEnd().split('\n');
    assert.match(lines[0], /^day \(UTC\)\s+project\s+cost \(USD\)$/);
    assert.match(lines.at(-1), new RegExp(`^total\\s+${usd(sum(rowsA, (r) => r.cost_micros)).replace('.', '\\.')}$`));
    assert.ok(lines.some((l) => l.includes(t.a.name)), 'project names, not ids');

    const csv = await tg(gw, ['costs', '--start', start, '--group-by', 'line_item', '--project', t.a.id, '--csv']);
    assert.equal(csv.code, 0, csv.stderr);
    const cl = csv.stdout.trimEnd().split('\r\n');
    assert.match(cl[0], /^start_time,end_time,bucket_start,project_id,api_key_id,line_item,/);
    assert.ok(cl.length > 2);

    const u = await tg(gw, ['usage', '--start', start, '--group-by', 'key', '--project', t.b.id, '--csv']);
    assert.equal(u.code, 0, u.stderr);
    const ul = u.stdout.trimEnd().split('\r\n').slice(1).map((l) => l.split(','));
    assert.deepEqual(ul.map((f) => f[4]).sort(), [t.kb.id]);
    assert.equal(sum(ul, (f) => Number(f[11])), sum(t.rows.filter((r) => r.project_id === t.b.id), (r) => r.cost_micros));

    const f = await tg(gw, ['forecast', '--project', t.a.name]);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, new RegExp(`^scope          project ${t.a.id}\\n`));
    assert.match(f.stdout, /\nmonth to date  \d+\.\d{6} USD\n/);
    const fo = await tg(gw, ['forecast', '--json']);
    assert.equal(fo.code, 0, fo.stderr);
    assert.equal(JSON.parse(fo.stdout).object, 'organization.costs.forecast');

    // gpt-4o-mini at 1.5 / 0.75 / 6 USD per 1M: 1000 x (300 x 1.5 + 100 x 0.75 + 250 x 6) / 1e6
    // = 2.025 USD a day; 60.75 a month.
    const est = await tg(gw, ['cost', 'estimate', '--model', 'gpt-4o-mini-2024-07-18', '--requests-per-day', '1000',
        '--prompt-tokens', '400', '--completion-tokens', '250', '--cache-hit-rate', '0.25']);
    assert.equal(est.code, 0, est.stderr);
    assert.match(est.stdout, /^model\s+gpt-4o-mini-2024-07-18 \(priced as gpt-4o-mini\)\n/);
    assert.match(est.stdout, /\ndaily cost\s+2\.025000 USD\n/);
    assert.match(est.stdout, /\nmonthly cost\s+60\.750000 USD \(30 days\)\n/);
    const none = await tg(gw, ['cost', 'estimate', '--model', 'no-such-model', '--requests-per-day', '1', '--prompt-tokens', '1', '--completion-tokens', '1']);
    assert.equal(none.code, 1);
    assert.equal(none.stderr, 'tollgate: the price table has no price for no-such-model\n');
    const bad = await tg(gw, ['cost', 'estimate', '--model', 'gpt-4o-mini', '--requests-per-day', '1', '--prompt-tokens', '1']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'tollgate: --completion-tokens is required\n');
});

shutdownTest(ctx);
