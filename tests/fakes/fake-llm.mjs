#!/usr/bin/env node
// A fake LLM provider for tests: one loopback HTTP server that speaks both
// real streaming wire formats, chosen by path:
//
//   POST /v1/messages              Anthropic Messages API, SSE events
//                                   (message_start, content_block_start/delta/stop,
//                                   message_delta, message_stop, ping, error)
//   POST …/chat/completions        OpenAI Chat Completions, `data:` chunks and
//                                   `data: [DONE]` (usage chunk when the request
//                                   asks stream_options.include_usage)
//
// So the anthropic provider's base URL is http://127.0.0.1:PORT and the openai
// provider's is http://127.0.0.1:PORT/v1.
//
//   node tests/fakes/fake-llm.mjs [--port N] [--watch-stdin]
//   → listens on 127.0.0.1 (port N, default a free one), prints {"port":N} on
//     stdout, then serves until SIGTERM/SIGINT, or with --watch-stdin until its
//     stdin closes (so it dies with the test that started it, even on a crash).
//
// What each request gets (its "scenario") is chosen by the x-fake-scenario
// header, else by the last user message: "scenario:NAME rest…" selects NAME;
// anything else is echoed back ("You said: …") in several deltas; when the
// last message is a tool result the answer quotes it ("Tool said: …").
//
//   echo          the default (see above)
//   text          "Hello, world — ünïcødé ✓" in 6 deltas; usage in 25 / out 7
//   tool          "Let me check." then two tool calls: bash with an input whose
//                 JSON is split inside a string, an escape, a \u escape and
//                 numbers; read_file {"path":"notes.txt"}; usage in 30 / out 42
//   tool_empty    one tool call (list_files) with no input at all → {}
//   badtool       a tool call whose assembled input is not valid JSON
//   crlf          CRLF line endings, a BOM, comments, pings, multi-line data
//   http429       HTTP 429 + retry-after: 7 + the provider's JSON error body
//   http500       HTTP 500 + the provider's JSON error body
//   http529       HTTP 529 overloaded_error (Anthropic's overload status)
//   http401echo   HTTP 401 whose message quotes the key it was sent (and a newline)
//   stall         headers and the first event, then nothing, forever
//   stall_headers no response at all, forever
//   cut           a few events, then half an event, then the socket is destroyed
//   noend         a few events, then a clean end without message_stop / [DONE]
//   badjson       an event whose data is not JSON
//   error_event   a few events, then the provider's in-stream error
//                 (Anthropic `event: error` overloaded_error; OpenAI {"error":…})
//   bigevent      one event of 1.5 MiB
//   slow          "tick N " every 50 ms, 200 times (for cancellation)
//   notsse        HTTP 200 with one application/json completion (no stream)
//
// Bytes are written in small pseudo-random pieces with Nagle off, so the
// client sees boundaries anywhere (inside a field name, between CR and LF,
// inside a UTF-8 sequence).
//
// Recording: GET /__requests → every request received so far, as JSON
// [{mode, method, path, headers, body, json}] (headers lower-cased; json is
// the parsed body or null); GET /__last → the last one; POST /__reset clears.

import http from 'node:http';

const requests = [];
const TOOL_PIECES = [
  '{"comm',
  'and":"echo \\',
  '"hi\\"',
  ' \\u0',
  '0e9 \\',
  '\\ done",',
  '"n":12',
  '5,"f":-1.',
  '5e3,"list":[1,2,{"a":nu',
  'll,"b":true}],"s":"tab\\',
  'there"}',
];
const READ_PIECES = ['', '{"pa', 'th": "no', 'tes.txt"}'];
const BAD_PIECES = ['{"command": "ls', ' -l", "n": ', '12'];

function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

function textOf(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content))
    return content
      .filter((b) => b && b.type === 'text')
      .map((b) => b.text)
      .join('');
  return '';
}

// What the conversation ends with: {kind: 'user'|'tool', text}.
function lastTurn(mode, body) {
  const msgs = Array.isArray(body?.messages) ? body.messages : [];
  const last = msgs[msgs.length - 1];
  if (!last) return { kind: 'user', text: '' };
  if (mode === 'openai') {
    if (last.role === 'tool') {
      const tools = [];
      for (let i = msgs.length - 1; i >= 0 && msgs[i].role === 'tool'; i--)
        tools.unshift(String(msgs[i].content));
      return { kind: 'tool', text: tools.join(' | ') };
    }
    return { kind: 'user', text: textOf(last.content) };
  }
  if (Array.isArray(last.content) && last.content.some((b) => b.type === 'tool_result')) {
    const tools = last.content
      .filter((b) => b.type === 'tool_result')
      .map((b) => (typeof b.content === 'string' ? b.content : textOf(b.content)));
    return { kind: 'tool', text: tools.join(' | ') };
  }
  return { kind: 'user', text: textOf(last.content) };
}

// --- wire formats ----------------------------------------------------------

function anthropicEvent(type, data, eol = '\n') {
  return `event: ${type}${eol}data: ${JSON.stringify({ type, ...data })}${eol}${eol}`;
}

function anthropicStart(model, inTokens) {
  return anthropicEvent('message_start', {
    message: {
      id: 'msg_fake01',
      type: 'message',
      role: 'assistant',
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: inTokens, output_tokens: 1 },
    },
  });
}

// A full Anthropic stream: parts = [{text: [deltas]} | {tool: {id, name, pieces}}].
function anthropicStream(model, parts, usage, stop) {
  const out = [anthropicStart(model, usage.in)];
  parts.forEach((p, index) => {
    if (p.text) {
      out.push(anthropicEvent('content_block_start', { index, content_block: { type: 'text', text: '' } }));
      if (index === 0) out.push(anthropicEvent('ping', {}));
      for (const t of p.text)
        out.push(anthropicEvent('content_block_delta', { index, delta: { type: 'text_delta', text: t } }));
    } else {
      out.push(
        anthropicEvent('content_block_start', {
          index,
          content_block: { type: 'tool_use', id: p.tool.id, name: p.tool.name, input: {} },
        }),
      );
      for (const j of p.tool.pieces)
        out.push(
          anthropicEvent('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: j } }),
        );
    }
    out.push(anthropicEvent('content_block_stop', { index }));
  });
  out.push(
    anthropicEvent('message_delta', {
      delta: { stop_reason: stop, stop_sequence: null },
      usage: { output_tokens: usage.out },
    }),
  );
  out.push(anthropicEvent('message_stop', {}));
  return out;
}

function openaiChunk(model, choice, extra = {}) {
  return `data: ${JSON.stringify({
    id: 'chatcmpl-fake01',
    object: 'chat.completion.chunk',
    created: 1700000000,
    model,
    system_fingerprint: 'fp_fake',
    choices: choice ? [{ index: 0, logprobs: null, finish_reason: null, ...choice }] : [],
    ...extra,
  })}\n\n`;
}

function openaiStream(model, parts, usage, finish, includeUsage) {
  const u = includeUsage ? { usage: null } : {};
  const out = [openaiChunk(model, { delta: { role: 'assistant', content: '' } }, u)];
  let toolIndex = 0;
  for (const p of parts) {
    if (p.text) {
      for (const t of p.text) out.push(openaiChunk(model, { delta: { content: t } }, u));
    } else {
      const index = toolIndex++;
      out.push(
        openaiChunk(
          model,
          {
            delta: {
              tool_calls: [{ index, id: p.tool.id, type: 'function', function: { name: p.tool.name, arguments: '' } }],
            },
          },
          u,
        ),
      );
      for (const j of p.tool.pieces)
        if (j !== '')
          out.push(openaiChunk(model, { delta: { tool_calls: [{ index, function: { arguments: j } }] } }, u));
    }
  }
  out.push(openaiChunk(model, { delta: {}, finish_reason: finish }, u));
  if (includeUsage)
    out.push(
      openaiChunk(model, null, {
        usage: { prompt_tokens: usage.in, completion_tokens: usage.out, total_tokens: usage.in + usage.out },
      }),
    );
  out.push('data: [DONE]\n\n');
  return out;
}

function errorBody(mode, status, type, message) {
  if (mode === 'anthropic') return { type: 'error', error: { type, message } };
  const code = { rate_limit_error: 'rate_limit_exceeded', api_error: null, authentication_error: 'invalid_api_key' }[type];
  const otype = { rate_limit_error: 'requests', api_error: 'server_error', authentication_error: 'invalid_request_error' }[type];
  return { error: { message, type: otype || type, param: null, code: code === undefined ? type : code } };
}

// --- serving ---------------------------------------------------------------

// Write the pieces' bytes in small random slices, one slice per tick.
function trickle(res, chunks, seed, end = true, then = null) {
  const bytes = Buffer.from(chunks.join(''), 'utf8');
  const rand = rng(seed);
  let off = 0;
  const step = () => {
    if (res.destroyed) return;
    if (off >= bytes.length) {
      if (then) then();
      else if (end) res.end();
      return;
    }
    const n = 1 + Math.floor(rand() * 48);
    res.write(bytes.subarray(off, off + n));
    off += n;
    setImmediate(step);
  };
  step();
}

function sseHeaders(res, mode) {
  res.socket?.setNoDelay(true);
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    ...(mode === 'anthropic' ? { 'request-id': 'req_fake01' } : { 'x-request-id': 'req_fake01' }),
  });
  res.flushHeaders();
}

function sendError(res, mode, status, type, message, headers = {}) {
  const body = JSON.stringify(errorBody(mode, status, type, message));
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(body);
}

function serve(mode, req, res, body, seed) {
  const model = body?.model ?? 'fake-model';
  const includeUsage = mode === 'openai' ? body?.stream_options?.include_usage === true : true;
  const turn = lastTurn(mode, body);
  let scenario = req.headers['x-fake-scenario'];
  if (!scenario) {
    const m = /^scenario:(\w+)/.exec(turn.text);
    scenario = turn.kind === 'tool' ? 'after_tool' : m ? m[1] : 'echo';
  }
  const stream = (parts, usage, stop) =>
    mode === 'anthropic'
      ? anthropicStream(model, parts, usage, stop)
      : openaiStream(model, parts, usage, stop === 'tool_use' ? 'tool_calls' : stop === 'end_turn' ? 'stop' : stop, includeUsage);
  const tid = (s) => (mode === 'anthropic' ? `toolu_${s}` : `call_${s}`);

  switch (scenario) {
    case 'echo':
    case 'after_tool': {
      const text = (scenario === 'echo' ? 'You said: ' : 'Tool said: ') + turn.text;
      const third = Math.max(1, Math.ceil(text.length / 3));
      const deltas = [text.slice(0, third), text.slice(third, 2 * third), text.slice(2 * third)].filter((s) => s);
      sseHeaders(res, mode);
      return trickle(res, stream([{ text: deltas }], { in: 12, out: 5 }, 'end_turn'), seed);
    }
    case 'text':
      sseHeaders(res, mode);
      return trickle(
        res,
        stream([{ text: ['Hel', 'lo, ', 'wor', 'ld — ', 'ünï', 'cødé ✓'] }], { in: 25, out: 7 }, 'end_turn'),
        seed,
      );
    case 'tool':
      sseHeaders(res, mode);
      return trickle(
        res,
        stream(
          [
            { text: ['Let me ', 'check.'] },
            { tool: { id: tid('01A'), name: 'bash', pieces: TOOL_PIECES } },
            { tool: { id: tid('01B'), name: 'read_file', pieces: READ_PIECES } },
          ],
          { in: 30, out: 42 },
          'tool_use',
        ),
        seed,
      );
    case 'tool_empty':
      sseHeaders(res, mode);
      return trickle(res, stream([{ tool: { id: tid('01C'), name: 'list_files', pieces: [] } }], { in: 9, out: 3 }, 'tool_use'), seed);
    case 'badtool':
      sseHeaders(res, mode);
      return trickle(res, stream([{ tool: { id: tid('01D'), name: 'bash', pieces: BAD_PIECES } }], { in: 9, out: 3 }, 'tool_use'), seed);
    case 'crlf': {
      // the anthropic stream rewritten: CRLF endings, a BOM, comments, and each
      // JSON payload spread over two data: lines (joined by LF it is still JSON)
      const base = stream([{ text: ['Hel', 'lo'] }], { in: 4, out: 2 }, 'end_turn');
      const rewritten = base.map((ev) =>
        ev
          .split('\n')
          .map((line) => {
            if (!line.startsWith('data: {')) return line;
            const json = line.slice(6);
            const cut = json.indexOf(',');
            return cut > 0 ? `data:${json.slice(0, cut + 1)}\ndata: ${json.slice(cut + 1)}` : line;
          })
          .join('\r\n'),
      );
      sseHeaders(res, mode);
      return trickle(res, ['\uFEFF', ': hello\r\n\r\n', ...rewritten.flatMap((e) => [e, ':keep-alive\r\n\r\n'])], seed);
    }
    case 'notsse': {
      // a server that ignored "stream": true: one JSON completion
      const body =
        mode === 'anthropic'
          ? { id: 'msg_fake01', type: 'message', role: 'assistant', model, content: [{ type: 'text', text: 'Hello' }], stop_reason: 'end_turn' }
          : { id: 'chatcmpl-fake01', object: 'chat.completion', model, choices: [{ index: 0, message: { role: 'assistant', content: 'Hello' }, finish_reason: 'stop' }] };
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(body));
    }
    case 'http429':
      return sendError(res, mode, 429, 'rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit', {
        'retry-after': '7',
      });
    case 'http500':
      return sendError(res, mode, 500, 'api_error', 'Internal server error');
    case 'http529':
      return sendError(res, mode, 529, 'overloaded_error', 'Overloaded');
    case 'http401echo': {
      const key = req.headers['x-api-key'] ?? (req.headers.authorization ?? '').replace(/^Bearer /, '');
      return sendError(res, mode, 401, 'authentication_error', `Incorrect API key provided: ${key}.\nSee the docs.`);
    }
    case 'stall': {
      sseHeaders(res, mode);
      const first = stream([{ text: ['never'] }], { in: 1, out: 1 }, 'end_turn')[0];
      res.write(first); // and then nothing: the socket stays open until the client leaves
      return;
    }
    case 'stall_headers':
      return; // not even a status line
    case 'cut': {
      const all = stream([{ text: ['Hel', 'lo, ', 'world'] }], { in: 1, out: 1 }, 'end_turn');
      const head = all.slice(0, 3);
      const half = all[3].slice(0, Math.floor(all[3].length / 2));
      sseHeaders(res, mode);
      return trickle(res, [...head, half], seed, false, () => res.socket.destroy());
    }
    case 'noend': {
      const all = stream([{ text: ['Hel', 'lo'] }], { in: 1, out: 1 }, 'end_turn');
      sseHeaders(res, mode);
      return trickle(res, all.slice(0, 3), seed);
    }
    case 'badjson': {
      const all = stream([{ text: ['Hel', 'lo'] }], { in: 1, out: 1 }, 'end_turn');
      const bad = mode === 'anthropic' ? 'event: content_block_delta\ndata: {"type":"content_block_delta",\n\n' : 'data: {"choices":[{"delta":\n\n';
      sseHeaders(res, mode);
      return trickle(res, [...all.slice(0, 2), bad, ...all.slice(2)], seed);
    }
    case 'error_event': {
      const all = stream([{ text: ['Hel', 'lo'] }], { in: 1, out: 1 }, 'end_turn');
      const err =
        mode === 'anthropic'
          ? anthropicEvent('error', { error: { type: 'overloaded_error', message: 'Overloaded' } })
          : `data: ${JSON.stringify({ error: { message: 'The model is overloaded', type: 'server_error', code: 'overloaded' } })}\n\n`;
      sseHeaders(res, mode);
      return trickle(res, [...all.slice(0, 3), err], seed);
    }
    case 'bigevent': {
      const big = 'x'.repeat(1536 * 1024);
      sseHeaders(res, mode);
      return trickle(res, stream([{ text: ['a', big] }], { in: 1, out: 1 }, 'end_turn'), seed);
    }
    case 'slow': {
      sseHeaders(res, mode);
      const all = stream([{ text: Array.from({ length: 200 }, (_, i) => `tick ${i} `) }], { in: 1, out: 200 }, 'end_turn');
      let i = 0;
      const timer = setInterval(() => {
        if (res.destroyed || i >= all.length) {
          clearInterval(timer);
          if (!res.destroyed) res.end();
          return;
        }
        res.write(all[i++]);
      }, 50);
      res.on('close', () => clearInterval(timer));
      return;
    }
    default:
      return sendError(res, mode, 400, 'invalid_request_error', `fake: unknown scenario ${scenario}`);
  }
}

// The checks the real APIs make before streaming, so a malformed request
// fails here as it would there.
function invalid(mode, req, body) {
  if (body === null || typeof body !== 'object') return [400, 'invalid_request_error', 'body is not a JSON object'];
  if (mode === 'anthropic') {
    if (!req.headers['x-api-key']) return [401, 'authentication_error', 'x-api-key header is required'];
    if (!req.headers['anthropic-version']) return [400, 'invalid_request_error', 'anthropic-version header is required'];
    if (typeof body.model !== 'string') return [400, 'invalid_request_error', 'model: Field required'];
    if (!Number.isInteger(body.max_tokens)) return [400, 'invalid_request_error', 'max_tokens: Field required'];
  } else if (typeof body.model !== 'string') {
    return [400, 'invalid_request_error', 'you must provide a model parameter'];
  }
  if (!Array.isArray(body.messages) || body.messages.length === 0)
    return [400, 'invalid_request_error', 'messages: at least one message is required'];
  return null;
}

let counter = 0;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url, 'http://fake');
    if (req.method === 'GET' && url.pathname === '/__requests') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(requests));
    }
    if (req.method === 'GET' && url.pathname === '/__last') {
      res.writeHead(requests.length ? 200 : 404, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(requests[requests.length - 1] ?? null));
    }
    if (req.method === 'POST' && url.pathname === '/__reset') {
      requests.length = 0;
      res.writeHead(204);
      return res.end();
    }
    const mode = url.pathname === '/v1/messages' ? 'anthropic' : url.pathname.endsWith('/chat/completions') ? 'openai' : null;
    let json = null;
    try {
      json = JSON.parse(raw);
    } catch {
      json = null;
    }
    requests.push({ mode, method: req.method, path: req.url, headers: req.headers, body: raw, json });
    if (mode === null || req.method !== 'POST') {
      res.writeHead(404, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ error: { message: 'not found', type: 'not_found_error' } }));
    }
    const bad = invalid(mode, req, json);
    if (bad) return sendError(res, mode, bad[0], bad[1], bad[2]);
    serve(mode, req, res, json, 0x9e3779b9 ^ ++counter);
  });
});

const args = process.argv.slice(2);
const portArg = args.indexOf('--port');
server.listen(portArg >= 0 ? Number(args[portArg + 1]) : 0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});

const quit = () => process.exit(0);
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
if (args.includes('--watch-stdin')) {
  process.stdin.on('end', quit);
  process.stdin.on('error', quit);
  process.stdin.resume();
}
