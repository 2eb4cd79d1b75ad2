// upstream.mjs: a scripted OpenAI-compatible upstream for the end-to-end tests.
//
// startUpstream() listens on 127.0.0.1 and a random port and answers, with the shapes of
// /work/shared/openai-wire.md:
//   POST /v1/chat/completions   JSON, or SSE `data:` chunks then `data: [DONE]`
//   POST /v1/completions        JSON, or SSE chunks (text_completion shape) then `data: [DONE]`
//   POST /v1/embeddings         encoding_format float (default) or base64 (LE float32)
//   POST /v1/responses          JSON, or named-event SSE (event: + data:, sequence_number,
//                               response.completed carrying usage, no [DONE])
//   POST /v1/moderations        results, no usage
//   POST /openai/deployments/{dep}/{chat/completions|completions|embeddings}?api-version=V
//                               Azure style: records deployment and api-version; chat
//                               streams start with the empty-choices prompt_filter_results
//                               chunk; JSON answers carry prompt/content filter results.
//   /v1/files, /v1/batches  an in-memory Files and Batch API (openai-wire.md 2.7): POST /v1/files
//                    (multipart, purpose + file), GET list / {id} / {id}/content, DELETE
//                    {id}; POST /v1/batches, GET list / {id}, POST {id}/cancel. A batch is
//                    "in_progress" when created and completes on its first retrieve (or on
//                    upstream.completeBatch(id); upstream.opts.holdBatches = true keeps it
//                    in progress), writing an output file with one line per input line
//                    whose usage is usageFor() of that line's body.
// Anything else: 404 {"error":{"message":"Invalid URL (METHOD PATH)",...}}.
//
// Auth: /v1 paths require `Authorization: Bearer <apiKey>`, Azure paths require
// `api-key: <azureKey>`; a wrong or missing key gets 401 invalid_api_key (as OpenAI does).
//
// Deterministic usage (usageFor() computes it; every record keeps what was reported):
//   text(request)  = all input text: chat message contents (string or text parts),
//                    completions prompt, responses instructions + input, joined by spaces
//   words(s)       = number of whitespace-separated words in s
//   reply          = "echo: " + the last user message text (chat, responses) or the prompt
//                    (completions; the first prompt when it is an array)
//   prompt_tokens  = 10 + words(text(request))            (responses: input_tokens)
//   cached_tokens  = 3                                     (input_tokens_details.cached_tokens)
//   completion     = n * (words(reply) + 2)                (responses: output_tokens, n = 1)
//   reasoning      = n * 2  (a subset of completion, as OpenAI counts it)
//   embeddings     = prompt_tokens = sum over inputs of max(1, words) (token arrays: length);
//                    vector i has `dimensions` (default 4) values, multiples of 1/8 so float32
//                    round trips exactly: v[j] = ((seed(input) + i + 7 j) mod 33 - 16) / 8
//   moderations    = no usage; an input containing "kill" is flagged (violence).
// So chat "say hi" with n=1: prompt 12, cached 3, completion 5 ("echo: say hi" = 3 + 2),
// reasoning 2. Stream chunks carry one word each; the usage chunk (choices: []) comes after
// the finish_reason chunk only when stream_options.include_usage is true.
//
// Strictness, as OpenAI: /v1/responses refuses stream_options.include_usage (its
// stream_options has only include_obfuscation) with 400 unknown_parameter; stream_options
// without stream: true is refused with 400 param stream_options on every endpoint.
//
// Misbehaviour, chosen by the model name in the body (or the Azure deployment name):
//   fail-500         500 with an OpenAI server_error body
//   fail-429         429 rate_limit_exceeded (type "requests") with retry-after-ms: 10,
//                    retry-after: 1 and x-ratelimit-{limit,remaining,reset}-{requests,tokens}
//   flaky-429        like fail-429 the first time a given request text is seen, then normal
//   fail-400         400 invalid_request_error, param "max_tokens", code unsupported_parameter
//   slow-first-byte  sends nothing for opts.slowFirstByteMs (default 5000 ms) then answers
//                    normally; the timer is dropped when the connection closes first
//   cut-stream       stream: the role chunk and 2 content chunks (Responses: the first 5
//                    events), then the socket is destroyed; non-stream: half the JSON body
//                    (with the full content-length) then destroyed
//   bad-json         200 application/json whose body is not JSON
//   garbage-stream   stream: 200 text/event-stream with `data: this is not json` then
//                    `data: [DONE]`; non-stream: as bad-json
//   slow-stream      stream: the role chunk and the first content chunk (Responses: the first
//                    5 events), then holds until upstream.release() is called (or
//                    opts.holdMs, default 15000 ms, passes), then the rest with
//                    opts.slowStreamGapMs (default 20 ms) between events; non-stream: normal
//   any other name   normal answers
// The behaviour can also be chosen by the body's `user` member, "behaviour:<name>" (so a
// priced model can misbehave); besides the names above it takes:
//   no-usage         a normal answer without usage: the JSON has no usage member, a stream
//                    has no usage chunk (even when stream_options.include_usage is true)
//
// Random usage (opts.randomUsage, or upstream.opts.randomUsage = true at run time): each
// normal answer reports a random usage below every bound a gateway can compute:
//   prompt_tokens  uniform in [1, the deterministic prompt_tokens above]
//   cached_tokens  uniform in [0, min(3, prompt_tokens)]
//   completion     uniform in [0, cap x n], cap = the smallest of max_tokens,
//                  max_completion_tokens, max_output_tokens present in the body (without
//                  one: the deterministic completion above); embeddings 0
//   reasoning      uniform in [0, completion]
// rec.usage holds what was reported, as always.
//
// Every request is recorded in upstream.requests (in arrival order) as
//   { n, method, url, path, query, headers, rawBody (Buffer), body (parsed JSON or null),
//     azure: { deployment, apiVersion } | null, endpoint, model, behaviour,
//     usage: { prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens } | null
//            (what this answer reports; null when it reports none),
//     status, completed (the full answer was written), closed (promise: the client closed
//     or the answer ended) }
// waitForRequests(count) resolves once `count` requests have arrived (a promise, bounded
// by a deadline), so tests never sleep.
import http from 'node:http';

const CREATED = 1767225600;
const DEFAULT_WAIT_MS = 15000;

export function words(s) {
    if (typeof s !== 'string') return 0;
    return s.trim().split(/\s+/).filter(Boolean).length;
}

function partText(content) {
    if (typeof content === 'string') return content;
    if (Array.isArray(content)) {
        return content
            .map((p) => (p && typeof p.text === 'string' ? p.text : ''))
            .filter(Boolean)
            .join(' ');
    }
    return '';
}

// Texts of the request that count as input, and the text the reply echoes.
export function inputOf(endpoint, body) {
    body = body || {};
    if (endpoint === 'chat.completions') {
        const msgs = Array.isArray(body.messages) ? body.messages : [];
        const all = msgs.map((m) => partText(m && m.content)).filter(Boolean);
        const users = msgs.filter((m) => m && m.role === 'user');
        const last = users.length ? partText(users[users.length - 1].content) : '';
        return { text: all.join(' '), echo: last };
    }
    if (endpoint === 'completions') {
        const p = body.prompt;
        if (typeof p === 'string') return { text: p, echo: p };
        if (Array.isArray(p) && p.every((x) => typeof x === 'string')) {
            return { text: p.join(' '), echo: p[0] || '' };
        }
        return { text: '', echo: '' };
    }
    if (endpoint === 'responses') {
        const parts = [];
        if (typeof body.instructions === 'string') parts.push(body.instructions);
        let echo = '';
        if (typeof body.input === 'string') {
            parts.push(body.input);
            echo = body.input;
        } else if (Array.isArray(body.input)) {
            for (const item of body.input) {
                const t = partText(item && item.content);
                if (t) parts.push(t);
                if (item && item.role === 'user') echo = t;
            }
        }
        return { text: parts.filter(Boolean).join(' '), echo };
    }
    return { text: '', echo: '' };
}

// A random usage below the request's bounds (see "Random usage" above); rand() in [0, 1).
export function randomUsageFor(endpoint, body, rand = Math.random) {
    const base = usageFor(endpoint, body);
    if (!base) return null;
    const pick = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
    const prompt = pick(1, Math.max(1, base.prompt_tokens));
    let completion = 0;
    if (endpoint !== 'embeddings') {
        const caps = [body.max_tokens, body.max_completion_tokens, body.max_output_tokens].filter(Number.isInteger);
        const n = endpoint === 'responses' ? 1 : Number.isInteger(body.n) && body.n > 0 ? body.n : 1;
        completion = pick(0, caps.length ? Math.min(...caps) * n : base.completion_tokens);
    }
    return {
        prompt_tokens: prompt,
        cached_tokens: pick(0, Math.min(3, prompt)),
        completion_tokens: completion,
        reasoning_tokens: pick(0, completion),
    };
}

export function replyFor(endpoint, body) {
    const { echo } = inputOf(endpoint, body);
    return echo ? `echo: ${echo}` : 'echo:';
}

function embeddingInputs(body) {
    const inp = body && body.input;
    if (typeof inp === 'string') return [inp];
    if (Array.isArray(inp)) {
        if (inp.length && inp.every((x) => typeof x === 'number')) return [inp];
        return inp;
    }
    return [];
}

// The usage the upstream reports for a (well-formed) request, normalised to chat names.
export function usageFor(endpoint, body) {
    if (endpoint === 'embeddings') {
        let prompt = 0;
        for (const x of embeddingInputs(body)) {
            prompt += Array.isArray(x) ? x.length : Math.max(1, words(x));
        }
        return { prompt_tokens: prompt, cached_tokens: 0, completion_tokens: 0, reasoning_tokens: 0 };
    }
    if (endpoint === 'moderations') return null;
    const n = endpoint === 'responses' ? 1 : Number.isInteger(body && body.n) ? body.n : 1;
    const per = words(replyFor(endpoint, body)) + 2;
    return {
        prompt_tokens: 10 + words(inputOf(endpoint, body).text),
        cached_tokens: 3,
        completion_tokens: n * per,
        reasoning_tokens: n * 2,
    };
}

// The vector the upstream returns for input i (see the header comment).
export function embeddingFor(input, i, dims = 4) {
    const s = Array.isArray(input) ? input.join(',') : String(input);
    let seed = 0;
    for (const ch of s) seed = (seed + ch.codePointAt(0)) % 33;
    const v = [];
    for (let j = 0; j < dims; j++) v.push((((seed + i + 7 * j) % 33) - 16) / 8);
    return v;
}

export function embeddingBase64(vec) {
    const f = new Float32Array(vec);
    return Buffer.from(f.buffer, f.byteOffset, f.byteLength).toString('base64');
}

function chatUsageObject(u) {
    return {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens + u.completion_tokens,
        prompt_tokens_details: { cached_tokens: u.cached_tokens, audio_tokens: 0 },
        completion_tokens_details: {
            reasoning_tokens: u.reasoning_tokens,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    };
}

function responsesUsageObject(u) {
    return {
        input_tokens: u.prompt_tokens,
        input_tokens_details: { cached_tokens: u.cached_tokens, cache_write_tokens: 0 },
        output_tokens: u.completion_tokens,
        output_tokens_details: { reasoning_tokens: u.reasoning_tokens },
        total_tokens: u.prompt_tokens + u.completion_tokens,
    };
}

function errorBody(message, type, param, code) {
    return { error: { message, type, param, code } };
}

const AZURE_FILTER = {
    hate: { filtered: false, severity: 'safe' },
    self_harm: { filtered: false, severity: 'safe' },
    sexual: { filtered: false, severity: 'safe' },
    violence: { filtered: false, severity: 'safe' },
};

const MOD_CATEGORIES = [
    'hate',
    'hate/threatening',
    'harassment',
    'harassment/threatening',
    'illicit',
    'illicit/violent',
    'self-harm',
    'self-harm/intent',
    'self-harm/instructions',
    'sexual',
    'sexual/minors',
    'violence',
    'violence/graphic',
];

// Splits "echo: say hi" into stream pieces "echo: ", "say ", "hi".
function pieces(reply) {
    const w = reply.split(' ');
    return w.map((x, i) => (i < w.length - 1 ? `${x} ` : x));
}

function sse(obj) {
    return `data: ${JSON.stringify(obj)}\n\n`;
}

function namedSse(type, obj) {
    return `event: ${type}\ndata: ${JSON.stringify(obj)}\n\n`;
}

class Upstream {
    constructor(opts) {
        this.opts = {
            apiKey: opts.apiKey ?? null,
            azureKey: opts.azureKey ?? null,
            slowFirstByteMs: opts.slowFirstByteMs ?? 5000,
            holdMs: opts.holdMs ?? 15000,
            slowStreamGapMs: opts.slowStreamGapMs ?? 20,
            randomUsage: opts.randomUsage ?? false,
        };
        this.requests = [];
        this.seenFlaky = new Set();
        this.waiters = [];
        this.held = new Set();
        this.sockets = new Set();
        this.server = http.createServer((req, res) => this.onRequest(req, res));
        this.server.on('connection', (s) => {
            this.sockets.add(s);
            s.on('close', () => this.sockets.delete(s));
        });
    }

    get url() {
        return `http://127.0.0.1:${this.port}`;
    }

    get v1() {
        return `${this.url}/v1`;
    }

    async listen() {
        await new Promise((resolve, reject) => {
            this.server.once('error', reject);
            this.server.listen(0, '127.0.0.1', resolve);
        });
        this.port = this.server.address().port;
        return this;
    }

    async close() {
        for (const h of this.held) h();
        this.held.clear();
        for (const s of this.sockets) s.destroy();
        await new Promise((resolve) => this.server.close(() => resolve()));
    }

    // Index to pass to since(): the requests that arrive after this call.
    mark() {
        return this.requests.length;
    }

    since(mark) {
        return this.requests.slice(mark);
    }

    // Resolves with the first `count` requests once that many have arrived.
    waitForRequests(count, timeoutMs = DEFAULT_WAIT_MS) {
        if (this.requests.length >= count) return Promise.resolve(this.requests.slice(0, count));
        return new Promise((resolve, reject) => {
            const w = { count, resolve, reject };
            w.timer = setTimeout(() => {
                this.waiters = this.waiters.filter((x) => x !== w);
                reject(
                    new Error(
                        `upstream: waited ${timeoutMs} ms for request #${count}, ` +
                            `have ${this.requests.length}`,
                    ),
                );
            }, timeoutMs);
            this.waiters.push(w);
        });
    }

    // Releases every slow-stream answer waiting now.
    release() {
        const hs = [...this.held];
        this.held.clear();
        for (const h of hs) h();
        return hs.length;
    }

    // How many slow-stream answers wait for release().
    get heldCount() {
        return this.held.size;
    }

    notify() {
        const ready = this.waiters.filter((w) => this.requests.length >= w.count);
        this.waiters = this.waiters.filter((w) => this.requests.length < w.count);
        for (const w of ready) {
            clearTimeout(w.timer);
            w.resolve(this.requests.slice(0, w.count));
        }
    }

    onRequest(req, res) {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const rawBody = Buffer.concat(chunks);
            let body = null;
            try {
                body = rawBody.length ? JSON.parse(rawBody.toString('utf8')) : null;
            } catch {
                body = null;
            }
            const u = new URL(req.url, 'http://upstream');
            const rec = {
                n: this.requests.length + 1,
                method: req.method,
                url: req.url,
                path: u.pathname,
                query: Object.fromEntries(u.searchParams),
                headers: { ...req.headers },
                rawBody,
                body,
                azure: null,
                endpoint: null,
                model: body && typeof body.model === 'string' ? body.model : null,
                behaviour: 'normal',
                usage: null,
                status: null,
                completed: false,
            };
            let closedResolve;
            rec.closed = new Promise((r) => (closedResolve = r));
            res.on('close', () => closedResolve());
            this.requests.push(rec);
            this.route(rec, res);
            this.notify();
        });
    }

    route(rec, res) {
        let m;
        if (/^\/v1\/(files|batches)(\/|$)/.test(rec.path)) {
            const auth = rec.headers.authorization || '';
            if (this.opts.apiKey && auth !== `Bearer ${this.opts.apiKey}`) {
                return this.unauthorized(rec, res);
            }
            return this.filesAndBatches(rec, res).catch((e) =>
                this.json(rec, res, 500, errorBody(String(e), 'server_error', null, null)),
            );
        }
        if (rec.method === 'POST' && (m = /^\/v1\/(chat\/completions|completions|embeddings|responses|moderations)$/.exec(rec.path))) {
            rec.endpoint = m[1] === 'chat/completions' ? 'chat.completions' : m[1];
            const auth = rec.headers.authorization || '';
            if (this.opts.apiKey && auth !== `Bearer ${this.opts.apiKey}`) {
                return this.unauthorized(rec, res);
            }
        } else if (
            rec.method === 'POST' &&
            (m = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|completions|embeddings)$/.exec(rec.path))
        ) {
            rec.endpoint = m[2] === 'chat/completions' ? 'chat.completions' : m[2];
            rec.azure = { deployment: decodeURIComponent(m[1]), apiVersion: rec.query['api-version'] ?? null };
            if (this.opts.azureKey && rec.headers['api-key'] !== this.opts.azureKey) {
                return this.unauthorized(rec, res);
            }
            if (!rec.azure.apiVersion) {
                return this.json(rec, res, 404, errorBody('Resource not found', null, null, '404'));
            }
        } else {
            return this.json(
                rec,
                res,
                404,
                errorBody(`Invalid URL (${rec.method} ${rec.path})`, 'invalid_request_error', null, null),
            );
        }
        if (!rec.body || typeof rec.body !== 'object') {
            return this.json(
                rec,
                res,
                400,
                errorBody('We could not parse the JSON body of your request.', 'invalid_request_error', null, null),
            );
        }
        const so = rec.body.stream_options;
        if (so !== undefined && so !== null && rec.body.stream !== true) {
            return this.json(
                rec,
                res,
                400,
                errorBody(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    'invalid_request_error',
                    'stream_options',
                    null,
                ),
            );
        }
        if (rec.endpoint === 'responses' && so && typeof so === 'object' && 'include_usage' in so) {
            return this.json(
                rec,
                res,
                400,
                errorBody(
                    "Unknown parameter: 'stream_options.include_usage'.",
                    'invalid_request_error',
                    'stream_options.include_usage',
                    'unknown_parameter',
                ),
            );
        }
        const name = rec.azure ? rec.azure.deployment : rec.model;
        const known = [
            'fail-500',
            'fail-429',
            'flaky-429',
            'fail-400',
            'slow-first-byte',
            'cut-stream',
            'bad-json',
            'garbage-stream',
            'slow-stream',
            'no-usage',
        ];
        const byUser = typeof rec.body.user === 'string' && rec.body.user.startsWith('behaviour:') ? rec.body.user.slice(10) : null;
        if (known.includes(name)) rec.behaviour = name;
        else if (rec.model && known.includes(rec.model)) rec.behaviour = rec.model;
        else if (byUser && known.includes(byUser)) rec.behaviour = byUser;
        this.behave(rec, res);
    }

    unauthorized(rec, res) {
        this.json(
            rec,
            res,
            401,
            errorBody(
                'Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.',
                'invalid_request_error',
                null,
                'invalid_api_key',
            ),
        );
    }

    headersFor(rec, extra = {}) {
        return { 'x-request-id': `req_up${String(rec.n).padStart(8, '0')}`, 'openai-processing-ms': '1', ...extra };
    }

    // The in-memory Files and Batch API (see the header comment).
    async filesAndBatches(rec, res) {
        this.files ??= new Map();
        this.batches ??= new Map();
        const notFound = (what, id) =>
            this.json(rec, res, 404, errorBody(`No such ${what}: '${id}'`, 'invalid_request_error', 'id', null));
        let m;
        if (rec.method === 'POST' && rec.path === '/v1/files') {
            const form = await new Response(rec.rawBody, {
                headers: { 'content-type': rec.headers['content-type'] || '' },
            }).formData();
            const file = form.get('file');
            if (!file || typeof file === 'string') {
                return this.json(rec, res, 400, errorBody("Missing required parameter: 'file'.", 'invalid_request_error', 'file', null));
            }
            const content = Buffer.from(await file.arrayBuffer());
            const f = this.addFile(file.name, form.get('purpose'), content);
            rec.file = f;
            return this.json(rec, res, 200, f.object);
        }
        if (rec.method === 'GET' && rec.path === '/v1/files') {
            return this.json(rec, res, 200, { object: 'list', data: [...this.files.values()].map((f) => f.object) });
        }
        if ((m = /^\/v1\/files\/([^/]+)(\/content)?$/.exec(rec.path))) {
            const f = this.files.get(m[1]);
            if (!f) return notFound('File', m[1]);
            if (rec.method === 'GET' && m[2]) {
                rec.status = 200;
                res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': f.content.length });
                return res.end(f.content, () => (rec.completed = true));
            }
            if (rec.method === 'GET') return this.json(rec, res, 200, f.object);
            if (rec.method === 'DELETE') {
                this.files.delete(m[1]);
                return this.json(rec, res, 200, { id: m[1], object: 'file', deleted: true });
            }
        }
        if (rec.method === 'POST' && rec.path === '/v1/batches') {
            const f = this.files.get(rec.body && rec.body.input_file_id);
            if (!f) return notFound('File', rec.body && rec.body.input_file_id);
            const id = `batch_${this.batches.size + 1}${Math.random().toString(16).slice(2, 10)}`;
            const lines = f.content.toString('utf8').split('\n').filter((l) => l.trim());
            const b = {
                id, object: 'batch', endpoint: rec.body.endpoint, errors: null,
                input_file_id: f.object.id, completion_window: rec.body.completion_window,
                status: 'in_progress', output_file_id: null, error_file_id: null,
                created_at: CREATED, in_progress_at: CREATED, expires_at: CREATED + 86400,
                completed_at: null, cancelled_at: null,
                request_counts: { total: lines.length, completed: 0, failed: 0 },
                metadata: rec.body.metadata ?? null,
            };
            this.batches.set(id, b);
            return this.json(rec, res, 200, b);
        }
        if (rec.method === 'GET' && rec.path === '/v1/batches') {
            return this.json(rec, res, 200, { object: 'list', data: [...this.batches.values()], has_more: false });
        }
        if ((m = /^\/v1\/batches\/([^/]+)(\/cancel)?$/.exec(rec.path))) {
            const b = this.batches.get(m[1]);
            if (!b) return notFound('Batch', m[1]);
            if (rec.method === 'POST' && m[2]) {
                if (b.status === 'in_progress') Object.assign(b, { status: 'cancelled', cancelled_at: CREATED + 5 });
                return this.json(rec, res, 200, b);
            }
            if (rec.method === 'GET' && !m[2]) {
                if (b.status === 'in_progress' && !this.opts.holdBatches) this.completeBatch(b.id);
                return this.json(rec, res, 200, b);
            }
        }
        return this.json(rec, res, 404, errorBody(`Invalid URL (${rec.method} ${rec.path})`, 'invalid_request_error', null, null));
    }

    addFile(filename, purpose, content) {
        const id = `file-${this.files.size + 1}${Math.random().toString(16).slice(2, 10)}`;
        const object = {
            id, object: 'file', bytes: content.length, created_at: CREATED, expires_at: CREATED + 2592000,
            filename, purpose, status: 'processed', status_details: null,
        };
        const f = { object, content };
        this.files.set(id, f);
        return f;
    }

    // Runs every line of batch id's input file and writes its output file.
    completeBatch(id) {
        const b = this.batches.get(id);
        const input = this.files.get(b.input_file_id).content.toString('utf8');
        const out = [];
        let i = 0;
        for (const line of input.split('\n').filter((l) => l.trim())) {
            const r = JSON.parse(line);
            const endpoint = r.url.replace(/^\/v1\//, '').replace('chat/completions', 'chat.completions');
            const u = usageFor(endpoint, r.body);
            const usage = endpoint === 'embeddings'
                ? { prompt_tokens: u.prompt_tokens, total_tokens: u.prompt_tokens }
                : {
                      prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens,
                      total_tokens: u.prompt_tokens + u.completion_tokens,
                      prompt_tokens_details: { cached_tokens: u.cached_tokens },
                      completion_tokens_details: { reasoning_tokens: u.reasoning_tokens },
                  };
            const body = {
                id: `chatcmpl-b${++i}`, object: 'chat.completion', created: CREATED, model: r.body.model,
                choices: [{ index: 0, message: { role: 'assistant', content: replyFor(endpoint, r.body) }, finish_reason: 'stop' }],
                usage,
            };
            out.push(JSON.stringify({ id: `batch_req_${i}`, custom_id: r.custom_id, response: { status_code: 200, request_id: `req_${i}`, body }, error: null }));
        }
        const f = this.addFile('batch_output.jsonl', 'batch_output', Buffer.from(out.join('\n') + '\n'));
        Object.assign(b, {
            status: 'completed', output_file_id: f.object.id, completed_at: CREATED + 60, finalizing_at: CREATED + 50,
            request_counts: { total: out.length, completed: out.length, failed: 0 },
        });
        return b;
    }

    json(rec, res, status, obj, extra = {}) {
        rec.status = status;
        const text = JSON.stringify(obj);
        res.writeHead(status, this.headersFor(rec, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra }));
        res.end(text, () => {
            rec.completed = true;
        });
    }

    rateLimited(rec, res) {
        this.json(
            rec,
            res,
            429,
            errorBody(
                'Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 10ms.',
                'requests',
                null,
                'rate_limit_exceeded',
            ),
            {
                'retry-after-ms': '10',
                'retry-after': '1',
                'x-ratelimit-limit-requests': '3',
                'x-ratelimit-remaining-requests': '0',
                'x-ratelimit-reset-requests': '10ms',
                'x-ratelimit-limit-tokens': '30000',
                'x-ratelimit-remaining-tokens': '29000',
                'x-ratelimit-reset-tokens': '2s',
            },
        );
    }

    behave(rec, res) {
        const stream = rec.body.stream === true && rec.endpoint !== 'embeddings' && rec.endpoint !== 'moderations';
        switch (rec.behaviour) {
            case 'fail-500':
                return this.json(
                    rec,
                    res,
                    500,
                    errorBody('The server had an error while processing your request. Sorry about that!', 'server_error', null, null),
                );
            case 'fail-429':
                return this.rateLimited(rec, res);
            case 'flaky-429': {
                const key = `${rec.endpoint}:${JSON.stringify(rec.body.messages ?? rec.body.prompt ?? rec.body.input ?? '')}`;
                if (!this.seenFlaky.has(key)) {
                    this.seenFlaky.add(key);
                    return this.rateLimited(rec, res);
                }
                return this.answer(rec, res, stream);
            }
            case 'fail-400':
                return this.json(
                    rec,
                    res,
                    400,
                    errorBody(
                        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                        'invalid_request_error',
                        'max_tokens',
                        'unsupported_parameter',
                    ),
                );
            case 'slow-first-byte': {
                const t = setTimeout(() => this.answer(rec, res, stream), this.opts.slowFirstByteMs);
                res.on('close', () => clearTimeout(t));
                return;
            }
            case 'bad-json':
                return this.badJson(rec, res);
            case 'garbage-stream':
                if (!stream) return this.badJson(rec, res);
                rec.status = 200;
                res.writeHead(200, this.headersFor(rec, { 'content-type': 'text/event-stream; charset=utf-8' }));
                res.write('data: this is not json\n\n');
                res.end('data: [DONE]\n\n', () => (rec.completed = true));
                return;
            default:
                return this.answer(rec, res, stream);
        }
    }

    badJson(rec, res) {
        rec.status = 200;
        const text = '{"id":"chatcmpl-bad","object":"chat.completion","choices":[{"index":0,';
        res.writeHead(200, this.headersFor(rec, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }));
        res.end(text, () => (rec.completed = true));
    }

    answer(rec, res, stream) {
        const ep = rec.endpoint;
        if (ep !== 'moderations') {
            rec.usage = this.opts.randomUsage ? randomUsageFor(ep, rec.body) : usageFor(ep, rec.body);
        }
        if (stream) {
            if (rec.behaviour === 'no-usage') rec.usage = null;
            return this.writeStream(rec, res, this.streamFrames(rec));
        }
        const obj = this.jsonAnswer(rec);
        if (rec.behaviour === 'no-usage') {
            delete obj.usage;
            rec.usage = null;
        }
        if (rec.behaviour === 'cut-stream') {
            rec.status = 200;
            rec.usage = null;
            const text = JSON.stringify(obj);
            res.writeHead(200, this.headersFor(rec, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }));
            res.write(text.slice(0, Math.floor(text.length / 2)), () => res.socket && res.socket.destroy());
            return;
        }
        return this.json(rec, res, 200, obj);
    }

    jsonAnswer(rec) {
        const b = rec.body;
        const ep = rec.endpoint;
        const model = rec.model ?? (rec.azure ? rec.azure.deployment : 'unknown');
        const u = rec.usage;
        const n = Number.isInteger(b.n) && b.n > 0 ? b.n : 1;
        const reply = replyFor(ep, b);
        if (ep === 'chat.completions') {
            const choices = [];
            for (let i = 0; i < n; i++) {
                const c = {
                    index: i,
                    message: { role: 'assistant', content: reply, refusal: null, annotations: [] },
                    logprobs: null,
                    finish_reason: 'stop',
                };
                if (rec.azure) c.content_filter_results = AZURE_FILTER;
                choices.push(c);
            }
            const obj = {
                id: `chatcmpl-up${rec.n}`,
                object: 'chat.completion',
                created: CREATED,
                model,
                choices,
                usage: chatUsageObject(u),
                service_tier: 'default',
                system_fingerprint: 'fp_e2e',
            };
            if (rec.azure) obj.prompt_filter_results = [{ prompt_index: 0, content_filter_results: AZURE_FILTER }];
            return obj;
        }
        if (ep === 'completions') {
            const choices = [];
            for (let i = 0; i < n; i++) choices.push({ text: reply, index: i, logprobs: null, finish_reason: 'stop' });
            return {
                id: `cmpl-up${rec.n}`,
                object: 'text_completion',
                created: CREATED,
                model,
                choices,
                usage: chatUsageObject(u),
                system_fingerprint: 'fp_e2e',
            };
        }
        if (ep === 'embeddings') {
            const dims = Number.isInteger(b.dimensions) && b.dimensions > 0 ? b.dimensions : 4;
            const b64 = b.encoding_format === 'base64';
            const data = embeddingInputs(b).map((x, i) => {
                const v = embeddingFor(x, i, dims);
                return { object: 'embedding', index: i, embedding: b64 ? embeddingBase64(v) : v };
            });
            return { object: 'list', data, model, usage: { prompt_tokens: u.prompt_tokens, total_tokens: u.prompt_tokens } };
        }
        if (ep === 'moderations') {
            const inputs = typeof b.input === 'string' ? [b.input] : Array.isArray(b.input) ? b.input : [];
            return {
                id: `modr-up${rec.n}`,
                model: model === 'unknown' ? 'omni-moderation-latest' : model,
                results: inputs.map((x) => {
                    const text = typeof x === 'string' ? x : (x && x.text) || '';
                    const flagged = /kill/i.test(text);
                    const categories = {};
                    const scores = {};
                    const applied = {};
                    for (const c of MOD_CATEGORIES) {
                        categories[c] = flagged && c === 'violence';
                        scores[c] = flagged && c === 'violence' ? 0.875 : 0.0009765625;
                        applied[c] = ['text'];
                    }
                    return { flagged, categories, category_scores: scores, category_applied_input_types: applied };
                }),
            };
        }
        // responses
        return this.responseObject(rec, 'completed', reply, u);
    }

    responseObject(rec, status, text, u) {
        const done = status === 'completed';
        return {
            id: `resp_up${rec.n}`,
            object: 'response',
            created_at: CREATED,
            completed_at: done ? CREATED + 1 : null,
            status,
            error: null,
            incomplete_details: null,
            instructions: rec.body.instructions ?? null,
            model: rec.model,
            output: done
                ? [
                      { type: 'reasoning', id: `rs_up${rec.n}`, summary: [] },
                      {
                          type: 'message',
                          id: `msg_up${rec.n}`,
                          status: 'completed',
                          role: 'assistant',
                          content: [{ type: 'output_text', text, annotations: [], logprobs: [] }],
                      },
                  ]
                : [],
            parallel_tool_calls: true,
            tool_choice: 'auto',
            tools: [],
            usage: done && u ? responsesUsageObject(u) : null,
            service_tier: 'default',
            store: true,
            metadata: {},
        };
    }

    // The SSE frames of a normal streamed answer (strings, each one event).
    streamFrames(rec) {
        const b = rec.body;
        const ep = rec.endpoint;
        const model = rec.model ?? (rec.azure ? rec.azure.deployment : 'unknown');
        const u = rec.usage;
        const reply = replyFor(ep, b);
        const includeUsage = !!(b.stream_options && b.stream_options.include_usage === true);
        const frames = [];
        if (ep === 'responses') return this.responsesFrames(rec, reply, u);
        const n = Number.isInteger(b.n) && b.n > 0 ? b.n : 1;
        const base = ep === 'chat.completions'
            ? { id: `chatcmpl-up${rec.n}`, object: 'chat.completion.chunk', created: CREATED, model, service_tier: 'default', system_fingerprint: 'fp_e2e' }
            : { id: `cmpl-up${rec.n}`, object: 'text_completion', created: CREATED, model, system_fingerprint: 'fp_e2e' };
        const chunk = (choices) => {
            const c = { ...base, choices };
            if (includeUsage) c.usage = null;
            return sse(c);
        };
        const cfr = rec.azure ? { content_filter_results: AZURE_FILTER } : {};
        if (rec.azure && ep === 'chat.completions') {
            frames.push(
                sse({
                    choices: [],
                    created: 0,
                    id: '',
                    model: '',
                    object: '',
                    prompt_filter_results: [{ prompt_index: 0, content_filter_results: AZURE_FILTER }],
                }),
            );
        }
        for (let i = 0; i < n; i++) {
            if (ep === 'chat.completions') {
                frames.push(chunk([{ index: i, delta: { role: 'assistant', content: '', refusal: null }, logprobs: null, finish_reason: null }]));
                for (const p of pieces(reply)) {
                    frames.push(chunk([{ index: i, delta: { content: p }, logprobs: null, finish_reason: null, ...cfr }]));
                }
                frames.push(chunk([{ index: i, delta: {}, logprobs: null, finish_reason: 'stop', ...cfr }]));
            } else {
                for (const p of pieces(reply)) {
                    frames.push(chunk([{ text: p, index: i, logprobs: null, finish_reason: null }]));
                }
                frames.push(chunk([{ text: '', index: i, logprobs: null, finish_reason: 'stop' }]));
            }
        }
        if (includeUsage && u) frames.push(sse({ ...base, choices: [], usage: chatUsageObject(u) }));
        frames.push('data: [DONE]\n\n');
        return frames;
    }

    responsesFrames(rec, reply, u) {
        const frames = [];
        let seq = 0;
        const ev = (type, fields) => frames.push(namedSse(type, { type, sequence_number: seq++, ...fields }));
        const itemId = `msg_up${rec.n}`;
        ev('response.created', { response: this.responseObject(rec, 'in_progress', '', u) });
        ev('response.in_progress', { response: this.responseObject(rec, 'in_progress', '', u) });
        ev('response.output_item.added', {
            output_index: 0,
            item: { type: 'message', id: itemId, status: 'in_progress', role: 'assistant', content: [] },
        });
        ev('response.content_part.added', {
            item_id: itemId,
            output_index: 0,
            content_index: 0,
            part: { type: 'output_text', text: '', annotations: [], logprobs: [] },
        });
        for (const p of pieces(reply)) {
            ev('response.output_text.delta', { item_id: itemId, output_index: 0, content_index: 0, delta: p, logprobs: [] });
        }
        ev('response.output_text.done', { item_id: itemId, output_index: 0, content_index: 0, text: reply, logprobs: [] });
        ev('response.content_part.done', {
            item_id: itemId,
            output_index: 0,
            content_index: 0,
            part: { type: 'output_text', text: reply, annotations: [], logprobs: [] },
        });
        ev('response.output_item.done', {
            output_index: 0,
            item: {
                type: 'message',
                id: itemId,
                status: 'completed',
                role: 'assistant',
                content: [{ type: 'output_text', text: reply, annotations: [], logprobs: [] }],
            },
        });
        ev('response.completed', { response: this.responseObject(rec, 'completed', reply, u) });
        return frames;
    }

    writeStream(rec, res, frames) {
        rec.status = 200;
        res.writeHead(200, this.headersFor(rec, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' }));
        const responses = rec.endpoint === 'responses';
        // The frames written before a cut or a hold: the role chunk (plus Azure's filter chunk)
        // and 2 (cut) or 1 (hold) content chunks; Responses: the first 5 events.
        const lead = (rec.azure && rec.endpoint === 'chat.completions' ? 1 : 0) + (rec.endpoint === 'completions' ? 0 : 1);
        if (rec.behaviour === 'cut-stream') {
            rec.usage = null;
            const k = responses ? 5 : lead + 2;
            res.write(frames.slice(0, k).join(''), () => res.socket && res.socket.destroy());
            return;
        }
        if (rec.behaviour === 'slow-stream') {
            const k = responses ? 5 : lead + 1;
            res.write(frames.slice(0, k).join(''));
            let gone = false;
            res.on('close', () => (gone = true));
            const rest = frames.slice(k);
            const go = () => {
                this.held.delete(go);
                clearTimeout(fallback);
                const next = () => {
                    if (gone) return;
                    const f = rest.shift();
                    if (rest.length === 0) return res.end(f ?? '', () => (rec.completed = true));
                    res.write(f);
                    setTimeout(next, this.opts.slowStreamGapMs);
                };
                next();
            };
            const fallback = setTimeout(go, this.opts.holdMs);
            this.held.add(go);
            return;
        }
        res.end(frames.join(''), () => (rec.completed = true));
    }
}

// Starts a scripted upstream. opts: apiKey (required Bearer key for /v1), azureKey (required
// api-key for Azure paths), slowFirstByteMs, holdMs, slowStreamGapMs.
export async function startUpstream(opts = {}) {
    return new Upstream(opts).listen();
}
