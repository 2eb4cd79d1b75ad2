// receivers.mjs: where the gateway's notifications land in an e2e test. An HTTP receiver for
// webhooks and a real SMTP server (npm smtp-server), both on loopback in this process; what
// they receive is kept in arrival order, and until() waits for a condition, re-checked on
// every delivery and every 200 ms (no sleeps).
//
//     const rx = new Receivers({ hookStatuses: [500] });   // first webhook answered 500
//     before: await rx.start('/hook');  then rx.hookUrl, and rx.notificationsYaml() in the config
//     await rx.until('the 50% notifications', () => rx.hooks.length >= 1);
//     after: await rx.close();
import http from 'node:http';
import { SMTPServer } from 'smtp-server';
import { freePort, SLOW } from './gateway.mjs';

// One e-mail as the SMTP server got it, for recipient `to`: headers (names lower-cased,
// folded lines joined) and the text after them.
export function parseMail(raw, to) {
    const [head, ...rest] = raw.split(/\r?\n\r?\n/);
    const headers = {};
    for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    return { to, headers, text: rest.join('\n\n') };
}

export class Receivers {
    hooks = []; // { status, signature, body, json, path }, in arrival order
    mails = []; // { to, headers, text }, one per recipient (parseMail)
    #waiters = [];

    // hookStatuses: the answers to the first webhook requests, in order; 200 after.
    constructor({ hookStatuses = [] } = {}) {
        this.hookStatuses = [...hookStatuses];
    }

    // Starts both servers; hookUrl is the receiver's URL with hookPath, smtpPort the SMTP port.
    async start(hookPath) {
        this.http = await this.#listenHooks();
        this.hookUrl = `http://127.0.0.1:${this.http.address().port}${hookPath}`;
        this.smtpPort = await freePort();
        this.smtp = await this.#listenSmtp(this.smtpPort);
    }

    async close() {
        await new Promise((r) => this.http.close(r));
        await new Promise((r) => this.smtp.close(r));
    }

    // The gateway's `notifications:` section: ticks every 100 ms, e-mail to this SMTP server.
    notificationsYaml() {
        return `notifications:
  interval_ms: 100
  webhook_timeout_ms: 3000
  smtp:
    host: 127.0.0.1
    port: ${this.smtpPort}
    from: alerts@tollgate.test
    timeout_ms: 5000
`;
    }

    // Resolves once cond() (sync or async) holds, or fails after the deadline with what
    // describe() says arrived.
    async until(what, cond, describe = () => '', deadlineMs = 15000 * SLOW) {
        const end = Date.now() + deadlineMs;
        while (!(await cond())) {
            const left = end - Date.now();
            if (left <= 0) throw new Error(`timed out waiting for ${what}; ${describe()}`);
            await new Promise((resolve) => {
                const t = setTimeout(resolve, Math.min(left, 200));
                this.#waiters.push(() => {
                    clearTimeout(t);
                    resolve();
                });
            });
        }
    }

    #arrived() {
        for (const w of this.#waiters.splice(0)) w();
    }

    #listenHooks() {
        const srv = http.createServer((req, res) => {
            const chunks = [];
            req.on('data', (c) => chunks.push(c));
            req.on('end', () => {
                const body = Buffer.concat(chunks).toString('utf8');
                const status = this.hookStatuses.length ? this.hookStatuses.shift() : 200;
                let json = null;
                try {
                    json = JSON.parse(body);
                } catch {
                    json = null;
                }
                this.hooks.push({ status, signature: req.headers['x-tollgate-signature'], body, json, path: req.url });
                res.writeHead(status, { 'content-type': 'text/plain' });
                res.end(status === 200 ? 'ok' : 'try later');
                this.#arrived();
            });
        });
        return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv)));
    }

    #listenSmtp(port) {
        const srv = new SMTPServer({
            authOptional: true,
            disabledCommands: ['STARTTLS'],
            logger: false,
            onData: (stream, session, cb) => {
                const chunks = [];
                stream.on('data', (c) => chunks.push(c));
                stream.on('end', () => {
                    const raw = Buffer.concat(chunks).toString('utf8');
                    for (const r of session.envelope.rcptTo) this.mails.push(parseMail(raw, r.address));
                    cb();
                    this.#arrived();
                });
            },
        });
        return new Promise((resolve, reject) => {
            srv.once('error', reject);
            srv.listen(port, '127.0.0.1', () => resolve(srv));
        });
    }
}
