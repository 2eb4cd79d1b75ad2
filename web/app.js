// app.js: the tollgate dashboard, a client of the admin API (/v1/organization/) on this origin.
//
// Sign-in keeps the admin key in sessionStorage (this tab only; never in a URL or a cookie)
// and asks GET /v1/organization/me who it is: the role decides which sections and controls
// exist. The server still checks every call; hiding is for clarity, not for safety. A 401 on
// any call (key revoked or expired) drops the key and returns to the sign-in screen with the
// gateway's message. Panels load independently: one failing shows its own error, and the
// monitor's endpoints (alerts, health, quality, notifications) answering 404 show a calm "not
// available" instead. Money comes as integer micro-dollars and is formatted from the integer.
// The DOM is built with createElement and textContent only (no HTML strings, no inline style
// attributes: the page's Content-Security-Policy forbids them).

const KEY_STORE = 'tollgate.dashboard.key';
const API = '/v1/organization/';

const state = {
    key: null,
    me: null,
    isOwner: false,
    projects: null, // [{id, name, ...}] once loaded
    keyNames: new Map(), // key id -> name, for usage grouped by key
    usage: { range: '24h', group: 'project_id' },
    keysProject: null, // the project the Keys section shows
    charts: [],
    renderSeq: 0,
};

// ---- helpers -----------------------------------------------------------------------------

class ApiError extends Error {
    constructor(status, message, code) {
        super(message);
        this.status = status;
        this.code = code || null;
    }
}

// Builds an element: attrs sets properties (class, text, testid, on<event>, others as
// attributes); children are nodes or strings (as text).
function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = v;
        else if (k === 'testid') el.dataset.testid = v;
        else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
        if (c === null || c === undefined || c === false) continue;
        el.append(c instanceof Node ? c : String(c));
    }
    return el;
}

// Integer micro-dollars as dollars, exactly: "$1,234.5" never, "$1,234.50" and "$0.000007".
export function formatMicros(micros) {
    if (micros === null || micros === undefined) return '—';
    let v = BigInt(micros);
    const neg = v < 0n;
    if (neg) v = -v;
    const whole = (v / 1000000n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    let frac = (v % 1000000n).toString().padStart(6, '0').replace(/0+$/, '');
    if (frac.length < 2) frac = frac.padEnd(2, '0');
    return `${neg ? '-' : ''}$${whole}.${frac}`;
}

// Dollars typed by a person ("12.5", "$1,000") as micro-dollars (a BigInt), or null if malformed.
export function parseDollars(text) {
    const t = String(text).trim().replace(/^\$/, '').replace(/,/g, '');
    const m = /^(\d{1,9})(?:\.(\d{0,6}))?$/.exec(t);
    if (!m) return null;
    return BigInt(m[1]) * 1000000n + BigInt((m[2] || '').padEnd(6, '0'));
}

function fmtInt(n) {
    return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

function fmtPct(rate) {
    if (rate === null || rate === undefined) return '—';
    return `${(rate * 100).toFixed(rate > 0 && rate < 0.001 ? 3 : 1)}%`;
}

function fmtMs(ms) {
    return ms === null || ms === undefined ? '—' : `${Math.round(ms)} ms`;
}

function fmtTime(s) {
    if (!s) return '—';
    return new Date(s * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

function nowS() {
    return Math.floor(Date.now() / 1000);
}

// ---- the admin API -------------------------------------------------------------------------

async function api(path, opts = {}) {
    const key = opts.key || state.key;
    // Signed out meanwhile (a call of the same view answered 401): nothing more to ask.
    if (!key) throw new ApiError(401, 'Signed out.');
    const headers = { authorization: `Bearer ${key}` };
    let body;
    if (opts.body !== undefined) {
        headers['content-type'] = 'application/json';
        body = JSON.stringify(opts.body);
    }
    let res;
    try {
        res = await fetch(API + path, {
            method: opts.method || (body !== undefined ? 'POST' : 'GET'),
            headers,
            body,
            cache: 'no-store',
            credentials: 'omit',
        });
    } catch (e) {
        throw new ApiError(0, `The gateway could not be reached (${e.message}).`);
    }
    const text = await res.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        json = null;
    }
    if (!res.ok) {
        const err = (json && json.error) || {};
        const e = new ApiError(res.status, err.message || `HTTP ${res.status}`, err.code);
        // The first 401 of the signed-in key signs out with its reason; later ones of the
        // same view (sent before it) must not replace that message.
        if (res.status === 401 && !opts.key && state.key === key) signOut(`Signed out. ${signinMessage(e)}`);
        throw e;
    }
    return json;
}

// ---- sign-in -------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function showSignin(message) {
    destroyCharts();
    $('app').hidden = true;
    $('signin').hidden = false;
    const err = $('signin-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('signin-key').value = '';
    $('signin-key').focus();
}

// Explains a refused key in words a person can act on, with the gateway's own message.
function signinMessage(e) {
    if (e.status === 401) {
        if (/revoked/i.test(e.message)) return 'This admin key has been revoked. Sign in with another key (an owner can make you one).';
        if (/expired/i.test(e.message)) return 'This admin key has expired. Sign in with another key (an owner can make you one).';
        return `This key is not a valid admin key. The gateway says: ${e.message}`;
    }
    if (e.status === 403) return `This key cannot open the dashboard: ${e.message}`;
    return `Sign-in failed: ${e.message}`;
}

async function signIn(key) {
    const me = await api('me', { key });
    state.key = key;
    state.me = me;
    state.isOwner = me.key && me.key.role === 'owner';
    state.projects = null;
    state.keyNames = new Map();
    sessionStorage.setItem(KEY_STORE, key);
    showApp();
}

function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    state.key = null;
    state.me = null;
    state.isOwner = false;
    state.renderSeq++;
    showSignin(message);
}

// ---- the app shell -------------------------------------------------------------------------

const SECTIONS = [
    { id: 'overview', title: 'Overview', render: viewOverview },
    { id: 'usage', title: 'Usage & cost', render: viewUsage, ownerOnly: true },
    { id: 'health', title: 'Health', render: viewHealth },
    { id: 'keys', title: 'Keys', render: viewKeys },
    { id: 'notifications', title: 'Notifications', render: viewNotifications },
    { id: 'audit', title: 'Audit log', render: viewAudit, ownerOnly: true },
];

function visibleSections() {
    return SECTIONS.filter((s) => !s.ownerOnly || state.isOwner);
}

function showApp() {
    $('signin').hidden = true;
    $('app').hidden = false;
    const me = state.me;
    $('org-name').textContent = me.organization ? me.organization.name : '';
    $('who').textContent = [me.user && me.user.email, me.key && `${me.key.name} (${me.key.redacted})`]
        .filter(Boolean)
        .join(' · ');
    const role = $('role');
    role.textContent = state.isOwner ? 'owner' : 'reader';
    role.className = `badge ${state.isOwner ? 'badge-owner' : 'badge-reader'}`;
    const nav = $('nav');
    nav.replaceChildren(
        ...visibleSections().map((s) => h('a', { href: `#${s.id}`, id: `nav-${s.id}`, testid: `nav-${s.id}` }, s.title)),
    );
    render();
}

function currentSection() {
    const id = location.hash.replace(/^#/, '') || 'overview';
    return SECTIONS.find((s) => s.id === id) || SECTIONS[0];
}

function destroyCharts() {
    for (const c of state.charts) c.destroy();
    state.charts = [];
}

async function render() {
    if (!state.key) return;
    const seq = ++state.renderSeq;
    const sec = currentSection();
    for (const a of $('nav').children) a.classList.toggle('active', a.id === `nav-${sec.id}`);
    destroyCharts();
    const view = $('view');
    view.replaceChildren(h('h1', { text: sec.title }));
    view.dataset.section = sec.id;
    if (sec.ownerOnly && !state.isOwner) {
        view.append(h('p', { class: 'muted', testid: 'owner-only' }, 'This section is for organization owners.'));
        return;
    }
    try {
        await sec.render(view, () => seq === state.renderSeq);
    } catch (e) {
        // Panels keep their own errors; this is what failed outside them.
        if (seq === state.renderSeq && e.status !== 401) view.append(h('p', { class: 'error', testid: 'view-error' }, e.message));
    }
}

// A titled card whose body fill() builds; errors stay inside the card. A 404 from an
// endpoint marked optional (the monitor's) reads as "not available" rather than an error.
function panel(parent, title, testid, fill, { optional = false, actions = null } = {}) {
    const body = h('div', { class: 'panel-body' }, h('p', { class: 'muted loading' }, 'Loading…'));
    const card = h('section', { class: 'panel', testid }, h('div', { class: 'panel-head' }, h('h2', { text: title }), actions), body);
    parent.append(card);
    const reload = async () => {
        try {
            const content = await fill();
            body.replaceChildren(...[content].flat().filter(Boolean));
            card.dataset.state = 'ready';
        } catch (e) {
            if (!(e instanceof ApiError)) console.error(e);
            if (optional && e.status === 404) {
                body.replaceChildren(h('p', { class: 'muted', testid: `${testid}-unavailable` }, 'Not available on this gateway yet.'));
                card.dataset.state = 'unavailable';
            } else if (e.status === 403) {
                body.replaceChildren(h('p', { class: 'muted', testid: `${testid}-forbidden` }, `Not for your role: ${e.message}`));
                card.dataset.state = 'forbidden';
            } else if (e.status !== 401) {
                body.replaceChildren(h('p', { class: 'error', testid: `${testid}-error` }, e.message));
                card.dataset.state = 'error';
            }
        }
    };
    card.reload = reload;
    return reload();
}

function table(columns, rows, { testid, rowTestid, empty = 'Nothing yet.' } = {}) {
    if (!rows.length) return h('p', { class: 'muted empty', testid: testid && `${testid}-empty` }, empty);
    return h(
        'table',
        { testid },
        h('thead', null, h('tr', null, columns.map((c) => h('th', { class: c.num ? 'num' : null }, c.title)))),
        h(
            'tbody',
            null,
            rows.map((r) =>
                h(
                    'tr',
                    { testid: rowTestid, ...(r._attrs || {}) },
                    columns.map((c) => {
                        const v = c.get(r);
                        return h('td', { class: c.num ? 'num' : null, 'data-col': c.key || null }, v instanceof Node ? v : v === null || v === undefined ? '—' : String(v));
                    }),
                ),
            ),
        ),
    );
}

async function loadProjects() {
    if (!state.projects) {
        const list = await api('projects?limit=100');
        state.projects = list.data.filter((p) => !p.archived_at);
    }
    return state.projects;
}

function projectName(id) {
    const p = (state.projects || []).find((x) => x.id === id);
    return p ? p.name : id;
}

// ---- overview ------------------------------------------------------------------------------

function bar(used, limit) {
    if (limit === null || limit === undefined) return h('span', { class: 'muted' }, 'no limit');
    // A zero budget refuses every priced request: full as soon as anything was spent.
    const pct = BigInt(limit) === 0n ? (BigInt(used) > 0n ? 100 : 0) : Number((BigInt(used) * 1000n) / BigInt(limit)) / 10;
    const fill = h('span', { class: `bar-fill${pct >= 100 ? ' over' : pct >= 80 ? ' warn' : ''}` });
    fill.style.width = `${Math.min(100, pct)}%`;
    return h('span', { class: 'bar', title: `${pct}% of the budget` }, h('span', { class: 'bar-track' }, fill), h('span', { class: 'bar-label' }, `${pct}%`));
}

// The owner's budget editor for one scope (path "budget" or "projects/<id>/budget").
function budgetEditor(path, budget, onSaved) {
    const cell = h('span', { class: 'budget-edit' });
    const start = () => {
        const input = h('input', {
            type: 'text',
            class: 'money',
            inputmode: 'decimal',
            placeholder: 'default',
            testid: 'budget-input',
            value: budget.monthly_limit_micros === null ? '' : formatMicros(budget.monthly_limit_micros).slice(1),
        });
        const msg = h('span', { class: 'error', testid: 'budget-error' });
        const save = async (ev) => {
            ev.preventDefault();
            const t = input.value.trim();
            const micros = t === '' ? null : parseDollars(t);
            if (t !== '' && micros === null) {
                msg.textContent = 'Enter dollars, e.g. 250 or 12.50 (empty: the default).';
                return;
            }
            try {
                await api(path, { body: { monthly_limit_micros: micros === null ? null : Number(micros) } });
                onSaved();
            } catch (e) {
                msg.textContent = e.message;
            }
        };
        cell.replaceChildren(
            h('form', { class: 'inline', onsubmit: save }, '$', input, h('button', { type: 'submit', class: 'primary', testid: 'budget-save' }, 'Save'), h('button', { type: 'button', onclick: () => onSaved() }, 'Cancel'), msg),
        );
        input.focus();
    };
    cell.append(h('button', { type: 'button', class: 'link', testid: 'budget-edit', onclick: start }, 'Edit budget'));
    return cell;
}

async function viewOverview(view, live) {
    const cards = h('div', { class: 'cards' });
    view.append(cards);
    const fillOrg = async () => {
        const budget = await api('budget');
        const forecast = state.isOwner ? await api('forecast') : null;
        const items = [
            h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Organization spend this month'), h('div', { class: 'stat-value', testid: 'org-spend' }, formatMicros(budget.spend_micros)), h('div', { class: 'muted' }, `${fmtTime(budget.period_start).slice(0, 10)} to ${fmtTime(budget.period_end).slice(0, 10)}`)),
            h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Monthly budget'), h('div', { class: 'stat-value', testid: 'org-budget' }, budget.monthly_limit_micros === null ? 'no limit' : formatMicros(budget.monthly_limit_micros)), bar(budget.spend_micros, budget.monthly_limit_micros), state.isOwner ? budgetEditor('budget', budget, () => render()) : null),
        ];
        if (forecast) {
            items.push(
                h('div', { class: `stat${forecast.exceeds_budget ? ' stat-alarm' : ''}` }, h('div', { class: 'stat-label' }, 'Forecast for the month'), h('div', { class: 'stat-value', testid: 'org-forecast' }, formatMicros(forecast.projected_micros)), h('div', { class: 'muted' }, forecast.exceeds_budget ? 'above the budget' : `daily average ${formatMicros(forecast.daily_average_micros)}`)),
            );
        }
        return h('div', { class: 'stats' }, items);
    };
    const fillProjects = async () => {
        const projects = await loadProjects();
        const rows = await Promise.all(
            projects.map(async (p) => {
                const id = encodeURIComponent(p.id);
                const [budget, forecast] = await Promise.all([api(`projects/${id}/budget`), api(`projects/${id}/forecast`).catch(() => null)]);
                return { p, budget, forecast, _attrs: { 'data-project': p.name } };
            }),
        );
        if (!live()) return null;
        const cols = [
            { title: 'Project', get: (r) => h('strong', null, r.p.name) },
            { title: 'Spend this month', key: 'spend', num: true, get: (r) => formatMicros(r.budget.spend_micros) },
            { title: 'Monthly budget', key: 'budget', num: true, get: (r) => (r.budget.monthly_limit_micros === null ? 'no limit' : formatMicros(r.budget.monthly_limit_micros)) },
            { title: 'Used', get: (r) => bar(r.budget.spend_micros, r.budget.monthly_limit_micros) },
            { title: 'Forecast', key: 'forecast', num: true, get: (r) => (r.forecast ? formatMicros(r.forecast.projected_micros) : null) },
            { title: 'Status', get: (r) => (r.forecast && r.forecast.exceeds_budget ? h('span', { class: 'badge badge-bad' }, 'forecast over budget') : h('span', { class: 'badge badge-ok' }, 'on track')) },
        ];
        if (state.isOwner) cols.push({ title: '', get: (r) => budgetEditor(`projects/${encodeURIComponent(r.p.id)}/budget`, r.budget, () => render()) });
        return table(cols, rows, { testid: 'projects-table', rowTestid: 'project-row', empty: 'No projects you can see.' });
    };
    const fillAlerts = async () => {
        const list = await api('alerts?state=firing&limit=20');
        return table(
            [
                { title: 'Alert', get: (a) => a.name },
                { title: 'Metric', get: (a) => a.metric },
                { title: 'Scope', get: (a) => [a.project_id ? projectName(a.project_id) : 'all projects', a.model || 'all models'].join(' · ') },
                { title: 'Value', num: true, get: (a) => `${a.value} (threshold ${a.threshold})` },
                { title: 'Since', get: (a) => fmtTime(a.fired_at) },
            ],
            list.data,
            { testid: 'alerts-table', rowTestid: 'alert-row', empty: 'No alert is firing.' },
        );
    };
    await Promise.all([
        panel(cards, 'Organization', 'panel-org', fillOrg),
        panel(view, 'Projects this month', 'panel-projects', fillProjects),
        panel(view, 'Firing alerts', 'panel-alerts', fillAlerts, { optional: true }),
    ]);
}

// ---- usage & cost --------------------------------------------------------------------------

const RANGES = {
    '1h': { label: 'Last hour', seconds: 3600, width: '1m', bucket: 60, limit: 61 },
    '24h': { label: 'Last 24 hours', seconds: 86400, width: '1h', bucket: 3600, limit: 25 },
    '7d': { label: 'Last 7 days', seconds: 7 * 86400, width: '1d', bucket: 86400, limit: 8 },
    '30d': { label: 'Last 30 days', seconds: 30 * 86400, width: '1d', bucket: 86400, limit: 31 },
};

const GROUPS = { project_id: 'Project', model: 'Model', api_key_id: 'API key' };

const PALETTE = ['#2563eb', '#d97706', '#059669', '#dc2626', '#7c3aed', '#0891b2', '#db2777', '#65a30d', '#475569'];

// Every bucket of one usage endpoint over the range, following next_page (bounded).
async function usageBuckets(endpoint, range, group) {
    const r = RANGES[range];
    const start = nowS() - r.seconds;
    const buckets = [];
    let page = null;
    for (let i = 0; i < 20; i++) {
        const q = new URLSearchParams({ start_time: String(start), bucket_width: r.width, group_by: group, limit: String(r.limit) });
        if (page) q.set('page', page);
        const res = await api(`usage/${endpoint}?${q}`);
        buckets.push(...res.data);
        if (!res.has_more || !res.next_page) break;
        page = res.next_page;
    }
    return buckets;
}

async function loadKeyNames() {
    if (state.keyNames.size) return;
    for (const p of await loadProjects()) {
        try {
            const list = await api(`projects/${encodeURIComponent(p.id)}/api_keys?limit=100`);
            for (const k of list.data) state.keyNames.set(k.id, `${k.name} (${p.name})`);
        } catch {
            // names are a convenience: ids stay readable
        }
    }
}

function groupLabel(group, v) {
    if (v === null || v === undefined) return '(none)';
    if (group === 'project_id') return projectName(v);
    if (group === 'api_key_id') return state.keyNames.get(v) || v;
    return v;
}

// A uPlot line chart of series over the bucket times xs; counts (isCount) get whole-number ticks.
function drawChart(el, title, xs, series, yFormat, isCount = false) {
    if (typeof window.uPlot !== 'function') {
        el.append(h('p', { class: 'error' }, 'The chart library did not load.'));
        return;
    }
    const width = Math.max(320, el.clientWidth || 640);
    const opts = {
        title,
        width,
        height: 240,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
        series: [{ label: 'time', value: (u, v) => (v === null ? '—' : fmtTime(v)) }, ...series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length], fill: `${PALETTE[i % PALETTE.length]}22`, width: 2, points: { show: true, size: 5 }, value: (u, v) => (v === null ? '—' : yFormat(v)) }))],
        axes: [{}, { values: (u, vals) => vals.map((v) => yFormat(v)), size: 80, ...(isCount ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000, 1000000] } : {}) }],
    };
    const chart = new window.uPlot(opts, [xs, ...series.map((s) => s.values)], el);
    state.charts.push(chart);
}

async function viewUsage(view, live) {
    const rangeSel = h('select', { testid: 'usage-range', 'aria-label': 'Range' }, Object.entries(RANGES).map(([k, r]) => h('option', { value: k, selected: k === state.usage.range }, r.label)));
    const groupSel = h('select', { testid: 'usage-group', 'aria-label': 'Group by' }, Object.entries(GROUPS).map(([k, label]) => h('option', { value: k, selected: k === state.usage.group }, `by ${label.toLowerCase()}`)));
    rangeSel.addEventListener('change', () => {
        state.usage.range = rangeSel.value;
        render();
    });
    groupSel.addEventListener('change', () => {
        state.usage.group = groupSel.value;
        render();
    });
    view.append(h('div', { class: 'toolbar' }, rangeSel, groupSel, h('span', { class: 'muted' }, 'Chat, completions, responses and embeddings; costs from the ledger.')));
    const { range, group } = state.usage;
    const fill = async () => {
        const [comp, emb] = await Promise.all([usageBuckets('completions', range, group), usageBuckets('embeddings', range, group)]);
        if (group === 'api_key_id') await loadKeyNames();
        else await loadProjects();
        if (!live()) return null;
        // Buckets by start time, merged across the two endpoints; totals per group.
        const times = [...new Set([...comp, ...emb].map((b) => b.start_time))].sort((a, b) => a - b);
        const groups = new Map();
        const total = { requests: 0, input: 0, cached: 0, output: 0, cost: 0n };
        for (const b of [...comp, ...emb]) {
            const ti = times.indexOf(b.start_time);
            for (const r of b.results) {
                const g = r[group] ?? null;
                const key = String(g);
                if (!groups.has(key)) groups.set(key, { g, requests: 0, input: 0, cached: 0, output: 0, cost: 0n, costAt: new Array(times.length).fill(0n), reqAt: new Array(times.length).fill(0) });
                const s = groups.get(key);
                const cost = BigInt(r.cost_micros || 0);
                for (const t of [s, total]) {
                    t.requests += r.num_model_requests;
                    t.input += r.input_tokens;
                    t.cached += r.input_cached_tokens;
                    t.output += r.output_tokens;
                    t.cost += cost;
                }
                s.costAt[ti] += cost;
                s.reqAt[ti] += r.num_model_requests;
            }
        }
        const list = [...groups.values()].sort((a, b) => (b.cost > a.cost ? 1 : b.cost < a.cost ? -1 : b.requests - a.requests));
        const stats = h(
            'div',
            { class: 'stats' },
            h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Requests'), h('div', { class: 'stat-value', testid: 'usage-total-requests' }, fmtInt(total.requests))),
            h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Input tokens'), h('div', { class: 'stat-value', testid: 'usage-total-input' }, fmtInt(total.input)), h('div', { class: 'muted' }, `${fmtInt(total.cached)} cached`)),
            h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Output tokens'), h('div', { class: 'stat-value', testid: 'usage-total-output' }, fmtInt(total.output))),
            h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Cost'), h('div', { class: 'stat-value', testid: 'usage-total-cost' }, formatMicros(total.cost))),
        );
        const costChart = h('div', { class: 'chart', testid: 'chart-cost' });
        const reqChart = h('div', { class: 'chart', testid: 'chart-requests' });
        const tbl = table(
            [
                { title: GROUPS[group], get: (s) => groupLabel(group, s.g) },
                { title: 'Requests', key: 'requests', num: true, get: (s) => fmtInt(s.requests) },
                { title: 'Input tokens', key: 'input', num: true, get: (s) => fmtInt(s.input) },
                { title: 'Cached', key: 'cached', num: true, get: (s) => fmtInt(s.cached) },
                { title: 'Output tokens', key: 'output', num: true, get: (s) => fmtInt(s.output) },
                { title: 'Cost', key: 'cost', num: true, get: (s) => formatMicros(s.cost) },
            ],
            list.map((s) => ({ ...s, _attrs: { 'data-group': groupLabel(group, s.g) } })),
            { testid: 'usage-table', rowTestid: 'usage-row', empty: 'No usage in this range.' },
        );
        const out = [stats, h('div', { class: 'charts' }, costChart, reqChart), tbl];
        // Charts need their element in the page to measure it: drawn once the panel shows it.
        setTimeout(() => {
            if (!live() || !list.length) return;
            const top = list.slice(0, 8);
            drawChart(costChart, `Cost per ${RANGES[range].width} by ${GROUPS[group].toLowerCase()}`, times, top.map((s) => ({ label: groupLabel(group, s.g), values: s.costAt.map((c) => Number(c) / 1e6) })), (v) => `$${v.toFixed(v !== 0 && Math.abs(v) < 0.01 ? 6 : 2)}`);
            drawChart(reqChart, `Requests per ${RANGES[range].width}`, times, top.map((s) => ({ label: groupLabel(group, s.g), values: s.reqAt })), (v) => fmtInt(v), true);
        }, 0);
        return out;
    };
    await panel(view, RANGES[range].label, 'panel-usage', fill);
}

// ---- health --------------------------------------------------------------------------------

function breakerBadge(b) {
    if (!b) return h('span', { class: 'muted' }, '—');
    const cls = b === 'closed' ? 'badge-ok' : b === 'open' ? 'badge-bad' : 'badge-warn';
    return h('span', { class: `badge ${cls}` }, b.replace('_', '-'));
}

// The quality signals of one model in a line: cut at length, empty, refusals, feedback.
function qualityText(q) {
    if (!q) return null;
    const fb = q.feedback_count ? `feedback ${q.feedback_mean === null ? '—' : q.feedback_mean.toFixed(2)} (${q.feedback_count})` : 'no feedback';
    return h('span', { class: 'quality' }, `length ${fmtPct(q.finish_length_rate)} · empty ${fmtPct(q.empty_rate)} · refusals ${fmtPct(q.refusal_rate)} · ${fb}`);
}

async function viewHealth(view) {
    const fillHealth = async () => {
        const list = await api('health?window_seconds=300');
        return table(
            [
                { title: 'Model', get: (m) => h('strong', null, m.model) },
                { title: 'Deployment', get: (m) => [m.provider, m.deployment].filter(Boolean).join(' / ') },
                { title: 'Requests', key: 'requests', num: true, get: (m) => fmtInt(m.requests) },
                { title: 'Error rate', key: 'error_rate', num: true, get: (m) => `${fmtPct(m.error_rate)} (${fmtInt(m.errors)})` },
                { title: 'Latency p50/p95/p99', num: true, get: (m) => (m.latency_ms ? `${[m.latency_ms.p50, m.latency_ms.p95, m.latency_ms.p99].map((v) => (v === null || v === undefined ? '—' : Math.round(v))).join(' / ')} ms` : null) },
                { title: 'TTFT p50/p95', num: true, get: (m) => (m.ttft_ms ? `${[m.ttft_ms.p50, m.ttft_ms.p95].map((v) => (v === null || v === undefined ? '—' : Math.round(v))).join(' / ')} ms` : null) },
                { title: 'Breaker', get: (m) => breakerBadge(m.breaker) },
                { title: 'Quality', key: 'quality', get: (m) => qualityText(m.quality) },
            ],
            list.data,
            { testid: 'health-table', rowTestid: 'health-row', empty: 'No traffic in the last 5 minutes.' },
        );
    };
    const fillDeployments = async () => {
        const list = await api('deployments?limit=100');
        return table(
            [
                { title: 'Deployment', get: (d) => h('strong', null, d.id) },
                { title: 'Provider', get: (d) => `${d.provider} (${d.upstream_model})` },
                { title: 'Status', get: (d) => (d.status === 'available' ? h('span', { class: 'badge badge-ok' }, 'available') : h('span', { class: 'badge badge-bad', title: d.unavailable_reason || '' }, d.status)) },
                { title: 'Breaker', get: (d) => breakerBadge(d.breaker) },
                { title: 'In flight', num: true, get: (d) => fmtInt(d.outstanding) },
                { title: 'TTFT (EWMA)', num: true, get: (d) => (d.ewma_ttft_ms ? fmtMs(d.ewma_ttft_ms) : null) },
                { title: 'Calls / failures (window)', num: true, get: (d) => `${fmtInt(d.window_calls)} / ${fmtInt(d.window_failures)}` },
                { title: 'Cooling down until', get: (d) => (d.cooldown_until ? fmtTime(d.cooldown_until) : null) },
            ],
            list.data,
            { testid: 'deployments-table', rowTestid: 'deployment-row', empty: 'No deployments configured.' },
        );
    };
    const fillQuality = async () => {
        const end = nowS();
        const list = await api(`quality?start_time=${end - 7 * 86400}&end_time=${end}&group_by=model`);
        return table(
            [
                { title: 'Model', get: (q) => h('strong', null, q.model) },
                { title: 'Requests', num: true, get: (q) => fmtInt(q.requests) },
                { title: 'Error rate', num: true, get: (q) => fmtPct(q.error_rate) },
                { title: 'Cut at length', num: true, get: (q) => fmtPct(q.finish_length_rate) },
                { title: 'Empty', num: true, get: (q) => fmtPct(q.empty_rate) },
                { title: 'Refusals', num: true, get: (q) => fmtPct(q.refusal_rate) },
                { title: 'Feedback', num: true, get: (q) => (q.feedback_count ? `${q.feedback_mean === null ? '—' : q.feedback_mean.toFixed(2)} (${q.feedback_count})` : null) },
                { title: 'Labels', get: (q) => Object.entries(q.labels || {}).map(([k, v]) => `${k} ${v}`).join(', ') || null },
            ],
            list.data,
            { testid: 'quality-table', rowTestid: 'quality-row', empty: 'No requests in the last 7 days.' },
        );
    };
    await Promise.all([
        panel(view, 'Models, last 5 minutes', 'panel-health', fillHealth, { optional: true }),
        panel(view, 'Deployments', 'panel-deployments', fillDeployments),
        panel(view, 'Quality, last 7 days', 'panel-quality', fillQuality, { optional: true }),
    ]);
}

// ---- keys ----------------------------------------------------------------------------------

async function viewKeys(view, live) {
    const projects = await loadProjects().catch(() => []);
    if (!live()) return;
    if (!projects.length) {
        view.append(h('p', { class: 'muted' }, 'You are not a member of any project.'));
    } else {
        if (!projects.some((p) => p.id === state.keysProject)) state.keysProject = projects[0].id;
        const sel = h('select', { testid: 'keys-project', 'aria-label': 'Project' }, projects.map((p) => h('option', { value: p.id, selected: p.id === state.keysProject }, p.name)));
        sel.value = state.keysProject;
        sel.addEventListener('change', () => {
            state.keysProject = sel.value;
            render();
        });
        view.append(h('div', { class: 'toolbar' }, h('label', null, 'Project ', sel)));
        const pid = encodeURIComponent(state.keysProject);
        const pname = projectName(state.keysProject);
        await keysSection(view, {
            prefix: 'key',
            createTitle: `New key for ${pname}`,
            listTitle: `Keys of ${pname}`,
            listTestid: 'panel-keys',
            base: `projects/${pid}/api_keys`,
            empty: 'This project has no keys.',
            extraColumns: [{ title: 'Owner', get: (k) => (k.owner && k.owner.type === 'service_account' ? `service account ${k.owner.service_account ? k.owner.service_account.name : ''}` : 'user') }],
        });
    }
    if (!live()) return;
    // Admin keys: anyone makes one for themselves; readers see and revoke only their own.
    await keysSection(view, {
        prefix: 'admin-key',
        createTitle: 'New admin key for yourself',
        listTitle: state.isOwner ? 'Admin keys' : 'Your admin keys',
        listTestid: 'panel-admin-keys',
        base: 'admin_api_keys',
        empty: 'No admin keys.',
        extraColumns: [{ title: 'Role', get: (k) => (k.owner && k.owner.role) || null }],
        // Revoking the key this page signed in with would end the session mid-action.
        isCurrent: (k) => state.me && state.me.key && k.id === state.me.key.id,
    });
}

// One kind of key: a create form (the value shown once) and the list with Revoke (confirmed).
// o: prefix (test ids), titles, base (the list/create path), empty, extraColumns, isCurrent.
async function keysSection(view, o) {
    const created = h('div', { class: 'created', hidden: true });
    const nameInput = h('input', { type: 'text', placeholder: 'Key name', maxlength: '64', testid: `${o.prefix}-create-name`, 'aria-label': 'Key name' });
    const formMsg = h('span', { class: 'error', testid: `${o.prefix}-create-error` });
    const holder = h('div');
    const reloadList = () => holder.querySelector('section.panel').reload();
    const create = async (ev) => {
        ev.preventDefault();
        formMsg.textContent = '';
        const name = nameInput.value.trim();
        if (!name) {
            formMsg.textContent = 'Give the key a name.';
            return;
        }
        try {
            const k = await api(o.base, { body: { name } });
            nameInput.value = '';
            created.hidden = false;
            created.replaceChildren(
                h('strong', null, `Key "${k.name}" created. Copy it now: it is not shown again.`),
                h('code', { class: 'secret', testid: `${o.prefix}-created-value` }, k.value),
                h('button', { type: 'button', testid: `${o.prefix}-created-dismiss`, onclick: () => { created.hidden = true; created.replaceChildren(); } }, 'Done'),
            );
            await reloadList();
        } catch (e) {
            formMsg.textContent = e.message;
        }
    };
    const form = h('form', { class: 'inline', onsubmit: create }, nameInput, h('button', { type: 'submit', class: 'primary', testid: `${o.prefix}-create` }, 'Create key'), formMsg);
    view.append(h('section', { class: 'panel', testid: `panel-${o.prefix}-create` }, h('div', { class: 'panel-head' }, h('h2', { text: o.createTitle })), h('div', { class: 'panel-body' }, form, created)));
    view.append(holder);
    const revokeCell = (k) => {
        if (o.isCurrent && o.isCurrent(k)) return h('span', { class: 'badge badge-owner' }, 'this session');
        const cell = h('span', { class: 'revoke' });
        const button = h('button', { type: 'button', class: 'link danger', testid: `${o.prefix}-revoke` }, 'Revoke');
        button.addEventListener('click', () => {
            const msg = h('span', { class: 'error' });
            const yes = async () => {
                try {
                    await api(`${o.base}/${encodeURIComponent(k.id)}`, { method: 'DELETE' });
                    await reloadList();
                } catch (e) {
                    msg.textContent = e.message;
                }
            };
            cell.replaceChildren(
                h('span', null, `Revoke "${k.name}"? Requests with it fail at once. `),
                h('button', { type: 'button', class: 'danger', testid: `${o.prefix}-revoke-confirm`, onclick: yes }, 'Revoke'),
                h('button', { type: 'button', testid: `${o.prefix}-revoke-cancel`, onclick: () => cell.replaceChildren(button) }, 'Cancel'),
                msg,
            );
        });
        cell.append(button);
        return cell;
    };
    await panel(holder, o.listTitle, o.listTestid, async () => {
        const list = await api(`${o.base}?limit=100`);
        return table(
            [
                { title: 'Name', key: 'name', get: (k) => h('strong', null, k.name) },
                { title: 'Key', get: (k) => h('code', null, k.redacted_value) },
                ...o.extraColumns,
                { title: 'Created', get: (k) => fmtTime(k.created_at) },
                { title: 'Last used', get: (k) => (k.last_used_at ? fmtTime(k.last_used_at) : 'never') },
                { title: 'Status', key: 'status', get: (k) => k.status },
                { title: '', get: (k) => (k.status === 'active' ? revokeCell(k) : null) },
            ],
            list.data.map((k) => ({ ...k, _attrs: { 'data-key-id': k.id, 'data-name': k.name } })),
            { testid: `${o.prefix}s-table`, rowTestid: `${o.prefix}-row`, empty: o.empty },
        );
    });
}

// ---- notifications -------------------------------------------------------------------------

async function viewNotifications(view) {
    const fillRules = async () => {
        const list = await api('alert_rules?limit=100');
        return table(
            [
                { title: 'Rule', get: (r) => h('strong', null, r.name) },
                { title: 'Condition', get: (r) => `${r.metric} ${r.condition} ${r.threshold} over ${r.window_seconds}s` },
                { title: 'Scope', get: (r) => [r.project_id ? projectName(r.project_id) : 'all projects', r.model || 'all models'].join(' · ') },
                { title: 'State', get: (r) => (r.state === 'firing' ? h('span', { class: 'badge badge-bad' }, 'firing') : h('span', { class: 'badge badge-ok' }, r.enabled ? 'ok' : 'disabled')) },
            ],
            list.data,
            { testid: 'rules-table', rowTestid: 'rule-row', empty: 'No alert rules.' },
        );
    };
    const fillNotes = async () => {
        const list = await api('notifications?limit=50');
        return table(
            [
                { title: 'Created', get: (n) => fmtTime(n.created_at) },
                { title: 'Event', get: (n) => h('code', null, n.event_key) },
                { title: 'Channel', get: (n) => n.channel },
                { title: 'Target', get: (n) => n.target },
                { title: 'Delivered', get: (n) => (n.delivered_at ? fmtTime(n.delivered_at) : h('span', { class: 'badge badge-warn' }, `pending (${n.attempts} attempts)`)) },
                { title: 'Last error', get: (n) => n.last_error },
            ],
            list.data,
            { testid: 'notifications-table', rowTestid: 'notification-row', empty: 'No notifications sent.' },
        );
    };
    await Promise.all([
        panel(view, 'Alert rules', 'panel-rules', fillRules, { optional: true }),
        panel(view, 'Notifications', 'panel-notifications', fillNotes, { optional: true }),
    ]);
}

// ---- audit log -----------------------------------------------------------------------------

function actorText(a) {
    if (!a) return null;
    const k = a.api_key;
    if (k && k.user) return k.user.email || k.user.id;
    if (k) return k.id;
    return a.type;
}

async function viewAudit(view) {
    let after = null;
    const rows = [];
    const cols = [
        { title: 'When', get: (e) => fmtTime(e.effective_at) },
        { title: 'Event', get: (e) => h('code', null, e.type) },
        { title: 'Actor', get: (e) => actorText(e.actor) },
        { title: 'Project', get: (e) => (e.project ? e.project.name : null) },
        { title: 'Target', get: (e) => (e[e.type] && e[e.type].id) || null },
        { title: 'From', get: (e) => e.source_address },
    ];
    const more = h('button', { type: 'button', testid: 'audit-more' }, 'Load more');
    const holder = h('div');
    const fill = async () => {
        const q = new URLSearchParams({ limit: '50' });
        if (after) q.set('after', after);
        const list = await api(`audit_logs?${q}`);
        rows.push(...list.data);
        after = list.last_id;
        more.hidden = !list.has_more;
        return [table(cols, rows, { testid: 'audit-table', rowTestid: 'audit-row', empty: 'The audit log is empty.' }), more];
    };
    view.append(holder);
    await panel(holder, 'Changes, newest first', 'panel-audit', fill);
    more.addEventListener('click', () => holder.querySelector('[data-testid="panel-audit"]').reload());
}

// ---- start ---------------------------------------------------------------------------------

async function start() {
    $('signin-form').addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const key = $('signin-key').value.trim();
        const btn = ev.submitter || null;
        $('signin-error').hidden = true;
        $('signin-error').textContent = '';
        if (btn) btn.disabled = true;
        try {
            await signIn(key);
        } catch (e) {
            sessionStorage.removeItem(KEY_STORE);
            showSignin(signinMessage(e));
        } finally {
            if (btn) btn.disabled = false;
        }
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('refresh').addEventListener('click', () => {
        state.projects = null; // projects may have come or gone
        state.keyNames = new Map();
        render();
    });
    window.addEventListener('hashchange', () => render());
    const saved = sessionStorage.getItem(KEY_STORE);
    if (!saved) {
        showSignin('');
        return;
    }
    try {
        await signIn(saved);
    } catch (e) {
        sessionStorage.removeItem(KEY_STORE);
        showSignin(`Signed out. ${signinMessage(e)}`);
    }
}

start();
