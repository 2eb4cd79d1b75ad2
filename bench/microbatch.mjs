// microbatch.mjs: embedding micro-batching, measured (run through bench/microbatch.sh).
//
// Starts the scripted upstream of the e2e tests and the real tollgate binary, creates two
// projects (embedding_batching off, and on with WINDOW_MS / MAX_INPUTS), then for each one
// runs CONNS concurrent loops of single-input SDK-shaped embeddings calls for DURATION_S
// seconds, and prints: calls made, upstream requests seen, the reduction, and the client
// latency p50 / p99 (the added latency is the difference, bounded by the window).
import { startUpstream } from '../tests/e2e/lib/upstream.mjs';
import { startGateway, newUpstreamKey, newAzureKey } from '../tests/e2e/lib/gateway.mjs';

const CONNS = Number(process.env.CONNS || 32);
const DURATION_S = Number(process.env.DURATION_S || 5);
const WINDOW_MS = Number(process.env.WINDOW_MS || 5);
const MAX_INPUTS = Number(process.env.MAX_INPUTS || 256);

function pct(sorted, p) {
    if (sorted.length === 0) return 0;
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function project(gw, name, embedding_batching) {
    const r = await gw.adminFetch('/v1/organization/projects', { body: { name: `${name}-${process.pid}` } });
    if (r.status !== 200) throw new Error(`project: ${r.status} ${r.text}`);
    const s = await gw.adminFetch(`/v1/organization/projects/${r.json.id}`, { body: { embedding_batching } });
    if (s.status !== 200) throw new Error(`settings: ${s.status} ${s.text}`);
    return gw.createKey(r.json.id, name);
}

async function load(gw, up, key, label) {
    const url = `${gw.v1}/embeddings`;
    const lat = [];
    let errors = 0;
    const mark = up.mark();
    const end = Date.now() + DURATION_S * 1000;
    let n = 0;
    async function loop(c) {
        while (Date.now() < end) {
            const t0 = process.hrtime.bigint();
            const r = await fetch(url, {
                method: 'POST',
                headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
                body: JSON.stringify({ model: 'text-embedding-3-small', input: `bench ${c} ${n++}` }),
            });
            await r.arrayBuffer();
            if (r.status !== 200) errors++;
            lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
    }
    await Promise.all(Array.from({ length: CONNS }, (_, c) => loop(c)));
    lat.sort((a, b) => a - b);
    const upstream = up.since(mark).filter((r) => r.endpoint === 'embeddings').length;
    return { label, calls: lat.length, errors, upstream, p50: pct(lat, 50), p99: pct(lat, 99) };
}

const upstreamKey = newUpstreamKey();
const azureKey = newAzureKey();
const up = await startUpstream({ apiKey: upstreamKey, azureKey });
const gw = await startGateway({ upstream: up, upstreamKey, azureKey });
try {
    const off = await load(gw, up, await project(gw, 'mb-off', { enabled: false }), 'off');
    const on = await load(
        gw,
        up,
        await project(gw, 'mb-on', { enabled: true, window_ms: WINDOW_MS, max_inputs: MAX_INPUTS }),
        `on (window ${WINDOW_MS} ms)`,
    );
    console.log(`embeddings, ${CONNS} connections, ${DURATION_S} s each`);
    console.log('| batching | calls | errors | upstream requests | calls per upstream request | p50 ms | p99 ms |');
    console.log('|---|---|---|---|---|---|---|');
    for (const r of [off, on]) {
        const per = r.upstream ? (r.calls / r.upstream).toFixed(1) : '-';
        console.log(`| ${r.label} | ${r.calls} | ${r.errors} | ${r.upstream} | ${per} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} |`);
    }
    const cut = off.upstream && on.calls ? 1 - on.upstream / on.calls / (off.upstream / off.calls) : 0;
    console.log(`upstream requests per call cut by ${(cut * 100).toFixed(1)} %; ` +
        `added latency p50 ${(on.p50 - off.p50).toFixed(2)} ms, p99 ${(on.p99 - off.p99).toFixed(2)} ms`);
} finally {
    gw.kill();
    await gw.exited;
    if (gw.cleanupOk) gw.cleanup();
    await up.close();
}
