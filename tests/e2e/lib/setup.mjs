// setup.mjs: one scripted upstream and one gateway per test file.
//
// useGateway(opts) registers before/after hooks and returns a context whose `up` (the
// upstream) and `gw` (the gateway) are set once before() has run. shutdownTest(ctx) declares
// the file's last test: a clean SIGTERM stop (exit 0, no sanitizer report, no secret in the
// logs). Tests never depend on each other's state: each creates its own keys and looks only at
// the upstream requests after its own mark().
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { startUpstream } from './upstream.mjs';
import { startGateway, newUpstreamKey, newAzureKey, upstreamLeaks, SLOW } from './gateway.mjs';

export function useGateway(opts = {}) {
    const ctx = { up: null, gw: null, upstreamKey: newUpstreamKey(), azureKey: newAzureKey() };
    before(async () => {
        ctx.up = await startUpstream({ apiKey: ctx.upstreamKey, azureKey: ctx.azureKey, ...(opts.upstream || {}) });
        ctx.gw = await startGateway({
            upstream: ctx.up,
            upstreamKey: ctx.upstreamKey,
            azureKey: ctx.azureKey,
            ...(opts.gateway || {}),
        });
    });
    after(async () => {
        if (ctx.gw && !ctx.gw.exit) {
            ctx.gw.kill();
            await ctx.gw.exited;
        }
        if (ctx.gw && ctx.gw.cleanupOk) ctx.gw.cleanup();
        if (ctx.up) await ctx.up.close();
    });
    return ctx;
}

export function shutdownTest(ctx) {
    test('shutdown: SIGTERM exits 0, no sanitizer report, no secret in the logs, no key upstream', { timeout: 60000 * SLOW }, async () => {
        const leaks = upstreamLeaks(ctx.up.requests, {
            upstreamKey: ctx.upstreamKey,
            azureKey: ctx.azureKey,
            clientKeys: [...ctx.gw.clientKeys, ctx.gw.adminKey].filter(Boolean),
        });
        await ctx.gw.stopAndCheck();
        assert.deepEqual(leaks, []);
    });
}

// Per-test timeout for tests that talk to the gateway.
export const T = { timeout: 30000 * SLOW };

export function msg(content) {
    return [{ role: 'user', content }];
}
