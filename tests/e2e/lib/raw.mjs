// raw.mjs: HTTP/1.1 over node:net, for requests no real client would send (bad bytes, huge
// headers, half-sent requests) and for reading exactly what the gateway answers.
//
// rawExchange(port, chunks, opts) connects to 127.0.0.1:port, writes each chunk (a string
// or Buffer) in order, and collects the answer until the first complete response
// (content-length or chunked) or until the server closes, whichever comes first; opts.deadlineMs
// bounds the wait (then it resolves with timedOut: true). It resolves with
// { status, headers (lower-cased names), body (string), json, closed, timedOut, raw }.
import net from 'node:net';

function parseHead(buf) {
    const i = buf.indexOf('\r\n\r\n');
    if (i < 0) return null;
    const lines = buf.subarray(0, i).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
    const headers = {};
    for (const l of lines.slice(1)) {
        const c = l.indexOf(':');
        if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
    }
    return { status: m ? Number(m[1]) : null, headers, bodyStart: i + 4 };
}

// Returns the decoded body when the response is complete, else null.
function completeBody(buf, head) {
    const rest = buf.subarray(head.bodyStart);
    if (head.headers['transfer-encoding'] && /chunked/i.test(head.headers['transfer-encoding'])) {
        const parts = [];
        let off = 0;
        for (;;) {
            const e = rest.indexOf('\r\n', off);
            if (e < 0) return null;
            const size = parseInt(rest.subarray(off, e).toString('latin1'), 16);
            if (Number.isNaN(size)) return null;
            if (size === 0) return Buffer.concat(parts);
            if (rest.length < e + 2 + size + 2) return null;
            parts.push(rest.subarray(e + 2, e + 2 + size));
            off = e + 2 + size + 2;
        }
    }
    if (head.headers['content-length'] !== undefined) {
        const n = Number(head.headers['content-length']);
        return rest.length >= n ? rest.subarray(0, n) : null;
    }
    if (head.status === 204 || head.status === 304) return Buffer.alloc(0);
    return null; // body ends at close
}

export function rawExchange(port, chunks, { deadlineMs = 10000, waitClose = false } = {}) {
    return new Promise((resolve) => {
        const sock = net.connect(port, '127.0.0.1');
        let buf = Buffer.alloc(0);
        let done = false;
        let closed = false;
        const finish = (timedOut) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            const head = parseHead(buf);
            let body = '';
            if (head) {
                const b = completeBody(buf, head);
                body = (b ?? buf.subarray(head.bodyStart)).toString('utf8');
            }
            let json = null;
            try {
                json = JSON.parse(body);
            } catch {
                json = null;
            }
            resolve({
                status: head ? head.status : null,
                headers: head ? head.headers : {},
                body,
                json,
                closed,
                timedOut,
                raw: buf.toString('latin1'),
            });
            sock.destroy();
        };
        const timer = setTimeout(() => finish(true), deadlineMs);
        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            const head = parseHead(buf);
            if (!waitClose && head && completeBody(buf, head) !== null) finish(false);
        });
        sock.on('error', () => {
            closed = true;
            finish(false);
        });
        sock.on('close', () => {
            closed = true;
            finish(false);
        });
        sock.on('connect', async () => {
            for (const c of chunks) {
                if (done) return;
                const ok = sock.write(c);
                if (!ok) await new Promise((r) => sock.once('drain', r));
            }
        });
    });
}

// A request with a JSON-ish body: method, path, headers (object), body (string or Buffer).
export function rawRequest(method, path, headers, body) {
    const b = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
    let head = `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
    for (const [k, v] of Object.entries(headers || {})) head += `${k}: ${v}\r\n`;
    if (body !== undefined) head += `Content-Length: ${b.length}\r\n`;
    head += '\r\n';
    return Buffer.concat([Buffer.from(head, 'latin1'), b]);
}
