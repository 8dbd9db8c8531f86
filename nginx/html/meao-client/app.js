// The meao browser client: pairing, sessions, and chat over /ws with
// streaming, tool events and approvals. Plain ES modules, no build step; all
// text from the server is rendered with textContent (markdown.js builds DOM
// nodes), and the page's Content-Security-Policy allows no inline script.

import { api, ApiError, clearTokens, onTokens, pairComplete, pairRequest, saveTokens, tokens } from './api.js';
import { renderMarkdown } from './markdown.js';
import { ChatSocket } from './socket.js';

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const state = {
  me: null,
  sessions: [],
  current: null, // session id
  turn: null, // { requestId, bubble, text, tools: Map }
  outbox: null, // a message typed while offline
  approvals: [], // pending approval_request frames, first shown
  countdown: null,
};
const socket = new ChatSocket();

function deviceName() {
  const ua = navigator.userAgent;
  const b = /Firefox/.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chromium' : /Safari/.test(ua) ? 'Safari' : 'Browser';
  return `${b} (web)`;
}

// ---- banner ---------------------------------------------------------------

const MESSAGES = {
  RATE_LIMITED: (f) => `Rate limited${f.retryAfter ? ` — retry in ${f.retryAfter} s` : ''}.`,
  SERVICE_UNAVAILABLE: () => 'The assistant is unavailable right now (orchestrator or database down). Try again shortly.',
  GATEWAY_TIMEOUT: () => 'The assistant took too long to answer.',
  CANCELLED: () => 'Cancelled.',
  CONFLICT: (f) => f.message || 'A turn is already running in this session.',
  PROVIDER_ERROR: (f) => `The model provider failed: ${f.message || 'unknown error'}`,
};

function showBanner(text, kind = 'error') {
  const b = $('banner');
  b.textContent = text;
  b.dataset.kind = kind;
  b.hidden = false;
}
function hideBanner() {
  $('banner').hidden = true;
}
function errorText(f) {
  const m = MESSAGES[f.code];
  return m ? m(f) : f.message || f.code || 'Something went wrong.';
}

// ---- pairing --------------------------------------------------------------

let pairPoll = null;

async function startPairing() {
  $('app-view').hidden = true;
  $('pair-view').hidden = false;
  $('pair-retry').hidden = true;
  clearTimeout(pairPoll);
  $('pair-status').textContent = 'Requesting a code…';
  try {
    const r = await pairRequest(deviceName());
    $('pair-code').textContent = r.pairingCode;
    $('pair-status').textContent = `Waiting for approval (expires in ${Math.round(r.expiresIn / 60)} min)…`;
    let interval = (r.interval || 5) * 1000;
    const poll = async () => {
      try {
        const pair = await pairComplete({ deviceCode: r.deviceCode });
        saveTokens(pair);
        enterApp();
        return;
      } catch (e) {
        const code = e instanceof ApiError ? e.code : 'NETWORK';
        if (code === 'slow_down') interval += 5000;
        if (code === 'expired' || code === 'denied' || code === 'invalid_code') {
          $('pair-status').textContent =
            code === 'denied' ? 'The owner denied this request.' : 'The code expired.';
          $('pair-code').textContent = '······';
          $('pair-retry').hidden = false;
          return;
        }
      }
      pairPoll = setTimeout(poll, interval);
    };
    pairPoll = setTimeout(poll, interval);
  } catch (e) {
    $('pair-status').textContent =
      e instanceof ApiError && e.code === 'RATE_LIMITED'
        ? `Too many pairing attempts; retry in ${e.retryAfter || 60} s.`
        : 'Cannot reach the server.';
    $('pair-retry').hidden = false;
  }
}

async function pairWithCode(ev) {
  ev.preventDefault();
  const code = $('code-input').value.trim();
  $('code-status').textContent = 'Pairing…';
  try {
    const pair = await pairComplete({ pairingCode: code, deviceName: deviceName() });
    saveTokens(pair);
    $('code-status').textContent = '';
    enterApp();
  } catch (e) {
    $('code-status').textContent =
      e instanceof ApiError && e.code === 'RATE_LIMITED' ? 'Too many attempts; wait a while.' : 'That code did not work.';
  }
}

// ---- sessions -------------------------------------------------------------

async function loadSessions() {
  const r = await api('GET', '/sessions?status=active&limit=50');
  state.sessions = r.sessions;
  renderSessions();
}

function renderSessions() {
  const ul = $('session-list');
  ul.replaceChildren();
  for (const s of state.sessions) {
    const li = el('li');
    const when = new Date(s.createdAt).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
    const open = el('button', 'session', `${s.channel} · ${when}`);
    open.type = 'button';
    open.dataset.id = s.id;
    if (s.id === state.current) open.setAttribute('aria-current', 'true');
    open.addEventListener('click', () => openSession(s.id));
    const del = el('button', 'delete', '×');
    del.type = 'button';
    del.title = 'Delete session';
    del.setAttribute('aria-label', 'Delete session');
    del.addEventListener('click', () => deleteSession(s.id));
    li.append(open, del);
    ul.append(li);
  }
}

async function newSession() {
  const s = await api('POST', '/sessions', { channel: 'web' });
  state.sessions.unshift({ ...s, status: 'active' });
  await openSession(s.id);
}

async function deleteSession(id) {
  await api('DELETE', `/sessions/${id}`);
  state.sessions = state.sessions.filter((s) => s.id !== id);
  if (state.current === id) {
    state.current = null;
    localStorage.removeItem('meao.session');
    if (state.sessions.length) await openSession(state.sessions[0].id);
    else await newSession();
  }
  renderSessions();
}

async function openSession(id) {
  state.current = id;
  localStorage.setItem('meao.session', id);
  renderSessions();
  closeNarrowSessions();
  const list = $('messages');
  list.replaceChildren();
  try {
    const r = await api('GET', `/sessions/${id}/messages?limit=100&includeContent=true`);
    for (const m of r.messages) {
      if (m.role === 'user') addUser(m.content, m.status === 'failed');
      else if (m.role === 'assistant') addAssistant(m.content);
    }
  } catch (e) {
    showBanner(`Cannot load the history: ${e.message}`);
  }
}

// ---- messages -------------------------------------------------------------

function scrollDown() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

function addUser(text, failed = false) {
  const li = el('li', 'msg user');
  if (text === undefined || text === null) {
    li.classList.add('hidden-content');
    li.textContent = '(content not shown)';
  } else li.textContent = text;
  if (failed) {
    li.classList.add('failed');
    li.title = 'This message did not get an answer';
  }
  $('messages').append(li);
  scrollDown();
  return li;
}

function addAssistant(text) {
  const li = el('li', 'msg assistant');
  const body = el('div', 'body');
  li.append(body);
  if (text === undefined || text === null) {
    li.classList.add('hidden-content');
    body.textContent = '(content not shown)';
  } else renderMarkdown(body, text);
  $('messages').append(li);
  scrollDown();
  return li;
}

function addTool(f) {
  const li = el('li', 'msg tool');
  li.dataset.tool = f.toolCallId;
  const name = el('span', 'tool-name', f.toolName || f.name);
  const summary = el('span', 'tool-summary', f.summary ? ` — ${f.summary}` : '');
  const status = el('span', 'tool-status', 'running…');
  const out = el('pre', 'tool-output');
  out.hidden = true;
  li.append(name, summary, ' ', status, out);
  $('messages').append(li);
  scrollDown();
  return li;
}

/** Render the streaming reply now (the final frame must not wait for a frame). */
function flushTurn() {
  const t = state.turn;
  if (t && t.bubble) renderMarkdown(t.bubble.querySelector('.body'), t.text);
}

let renderQueued = false;
function renderTurn() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    const t = state.turn;
    if (t && t.bubble) {
      renderMarkdown(t.bubble.querySelector('.body'), t.text);
      scrollDown();
    }
  });
}

function turnBubble() {
  const t = state.turn;
  if (!t.bubble) t.bubble = addAssistant('');
  t.bubble.classList.add('streaming');
  return t.bubble;
}

function setBusy(busy) {
  $('send').disabled = busy;
  $('cancel').hidden = !busy;
}

function endTurn() {
  if (state.turn && state.turn.bubble) state.turn.bubble.classList.remove('streaming');
  state.turn = null;
  setBusy(false);
}

function send(text) {
  const requestId = `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const frame = { type: 'message', content: text, sessionId: state.current, requestId };
  if (!socket.send(frame)) {
    // offline: keep the message and send it once connected
    state.outbox = text;
    showBanner('Offline — your message will be sent when the connection is back.', 'info');
    return;
  }
  state.turn = { requestId, text: '', bubble: null, userText: text, tools: new Map(), approvalTool: new Map() };
  addUser(text);
  $('input').value = '';
  setBusy(true);
  hideBanner();
}

function onFrame(f) {
  const t = state.turn;
  if (f.type === 'approval_request') {
    if (t && f.correlationId === t.requestId) {
      t.approvalTool.set(f.approvalId, f.toolCallId);
      const li = t.tools.get(f.toolCallId);
      if (li) li.querySelector('.tool-status').textContent = 'waiting for your approval';
    }
    queueApproval(f);
    return;
  }
  if (f.type === 'approval_ack') return;
  if (f.type === 'error' && !f.requestId) {
    if (f.code === 'APPROVAL_EXPIRED' || f.code === 'APPROVAL_NOT_FOUND') return;
    showBanner(errorText(f));
    return;
  }
  if (!t || f.requestId !== t.requestId) {
    if (f.type === 'error' && f.requestId) showBanner(errorText(f));
    return;
  }
  switch (f.type) {
    case 'text_delta':
      turnBubble();
      t.text += f.delta;
      renderTurn();
      break;
    case 'tool_call_start':
      t.bubble = null; // text after the tool goes into a new bubble
      t.text = '';
      t.tools.set(f.toolCallId, addTool(f));
      break;
    case 'approval_resolved': {
      const li = t.tools.get(t.approvalTool.get(f.approvalId)) || [...t.tools.values()].at(-1);
      dropApproval(f.approvalId);
      if (li) li.querySelector('.tool-status').textContent = f.approved ? 'running…' : `denied (${f.reason})`;
      break;
    }
    case 'tool_call_result': {
      const li = t.tools.get(f.toolCallId);
      if (li) {
        const st = li.querySelector('.tool-status');
        if (!/^denied/.test(st.textContent)) st.textContent = f.success ? 'done' : 'failed';
        li.classList.add(f.success ? 'ok' : 'failed');
        if (f.output) {
          const out = li.querySelector('.tool-output');
          out.textContent = f.output;
          out.hidden = false;
        }
      }
      break;
    }
    case 'message_complete':
      if (!t.bubble && t.text === '' && f.content) {
        turnBubble();
        t.text = f.content;
      }
      flushTurn();
      endTurn();
      break;
    case 'error':
      flushTurn();
      showBanner(errorText(f));
      if (f.code !== 'CANCELLED' && !$('input').value) $('input').value = t.userText; // easy to resend
      endTurn();
      break;
    default:
      break;
  }
}

// ---- approvals ------------------------------------------------------------

function queueApproval(f) {
  state.approvals.push(f);
  if (state.approvals.length === 1) showApproval();
}

function dropApproval(id) {
  const first = state.approvals[0];
  state.approvals = state.approvals.filter((a) => a.approvalId !== id);
  if (first && first.approvalId === id) {
    closeApproval();
    if (state.approvals.length) showApproval();
  }
}

function showApproval() {
  const f = state.approvals[0];
  const d = $('approval');
  $('approval-tool').textContent = f.toolName;
  $('approval-summary').textContent = (f.request && f.request.summary) || f.argsSummary || '';
  const risks = $('approval-risks');
  risks.replaceChildren(...((f.request && f.request.risks) || []).map((r) => el('li', null, r)));
  $('approval-args').textContent = f.argsSummary || '';
  d.classList.toggle('dangerous', Boolean(f.request && f.request.isDangerous));
  const deadline = Date.now() + (f.timeout || 30) * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    $('approval-countdown').textContent = String(left);
    if (left === 0) {
      // the server denies it at the same moment; close the dialog here
      dropApproval(f.approvalId);
      return;
    }
    state.countdown = setTimeout(tick, 250);
  };
  tick();
  if (!d.open) d.showModal();
  $('deny').focus();
}

function closeApproval() {
  clearTimeout(state.countdown);
  const d = $('approval');
  if (d.open) d.close();
}

function answer(approved, trustSession = false) {
  const f = state.approvals[0];
  if (!f) return;
  socket.send({ type: 'approval_response', approvalId: f.approvalId, approved, trustSession });
  dropApproval(f.approvalId);
}

// ---- the app --------------------------------------------------------------

function closeNarrowSessions() {
  $('sessions').classList.remove('open');
  $('toggle-sessions').setAttribute('aria-expanded', 'false');
}

async function enterApp() {
  clearTimeout(pairPoll);
  $('pair-view').hidden = true;
  $('app-view').hidden = false;
  try {
    state.me = await api('GET', '/auth/me');
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.code === 'AUTH_REQUIRED')) {
      clearTokens();
      startPairing();
      return;
    }
    showBanner('Cannot reach the server; retrying…');
  }
  if (state.me) $('who').textContent = `${state.me.name} (${state.me.role})`;
  try {
    await loadSessions();
    const saved = localStorage.getItem('meao.session');
    const s = state.sessions.find((x) => x.id === saved) || state.sessions[0];
    if (s) await openSession(s.id);
    else await newSession();
  } catch (e) {
    showBanner(`Cannot load sessions: ${e.message}`);
  }
  socket.start();
  $('input').focus();
}

async function signOut() {
  socket.stop();
  const t = tokens();
  try {
    if (t && t.deviceId) await api('POST', '/auth/revoke', { deviceId: t.deviceId });
  } catch {
    /* the tokens are forgotten either way */
  }
  clearTokens();
  localStorage.removeItem('meao.session');
  state.current = null;
  $('messages').replaceChildren();
  startPairing();
}

function wire() {
  $('code-form').addEventListener('submit', pairWithCode);
  $('pair-retry').addEventListener('click', startPairing);
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('input').value.trim();
    if (text && !state.turn) send(text);
  });
  $('input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('cancel').addEventListener('click', () => {
    if (state.turn) socket.send({ type: 'cancel', targetRequestId: state.turn.requestId });
  });
  $('new-session').addEventListener('click', () => newSession().catch((e) => showBanner(e.message)));
  $('sign-out').addEventListener('click', signOut);
  $('toggle-sessions').addEventListener('click', () => {
    const open = $('sessions').classList.toggle('open');
    $('toggle-sessions').setAttribute('aria-expanded', String(open));
  });
  $('approve').addEventListener('click', () => answer(true));
  $('trust').addEventListener('click', () => answer(true, true));
  $('deny').addEventListener('click', () => answer(false));
  $('approval').addEventListener('cancel', (ev) => {
    ev.preventDefault(); // Escape denies
    answer(false);
  });

  socket.addEventListener('frame', (ev) => onFrame(ev.detail));
  socket.addEventListener('state', (ev) => {
    const s = ev.detail;
    const c = $('conn-state');
    c.textContent = s === 'open' ? 'connected' : s === 'connecting' ? 'connecting…' : 'offline — reconnecting';
    c.dataset.state = s;
    if (s === 'offline' && state.turn) {
      // the turn died with the connection (the server denied its approvals)
      showBanner('Connection lost during the reply; reconnecting…');
      if (!$('input').value) $('input').value = state.turn.userText;
      closeApproval();
      state.approvals = [];
      endTurn();
    }
    if (s === 'open') {
      if ($('banner').dataset.kind === 'info' || /Connection lost/.test($('banner').textContent)) hideBanner();
      if (state.outbox) {
        const text = state.outbox;
        state.outbox = null;
        send(text);
      }
    }
  });
  socket.addEventListener('authfail', () => {
    clearTokens();
    startPairing();
  });
  onTokens(() => socket.reauth());
}

wire();
if (tokens()) enterApp();
else startPairing();
