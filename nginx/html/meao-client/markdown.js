// A small, safe markdown renderer for model output. It builds DOM nodes with
// createElement and textContent only — no HTML string from the model is ever
// parsed — so `<script>` or `<img onerror>` in a reply shows as text.
// Supported: fenced code blocks (``` with an optional language; an unclosed
// fence while streaming renders as code), headings (#..###), bullet and
// numbered lists, paragraphs, inline `code`, **bold**, *italic* / _italic_,
// and [links](https://…) to http(s) URLs only.

// `_italic_` only between non-word characters, so snake_case and __x__ stay text
const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s][^*\n]*\*|(?<!\w)_[^_\s][^_\n]*_(?!\w))|(\[[^\]\n]+\]\([^)\s]+\))/;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function safeUrl(href) {
  try {
    const u = new URL(href, window.location.href);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch {
    return null;
  }
}

/** Append the inline markup of one line of text to parent. */
function inline(parent, text) {
  let rest = text;
  while (rest.length) {
    const m = INLINE.exec(rest);
    if (!m) {
      parent.append(rest);
      return;
    }
    if (m.index) parent.append(rest.slice(0, m.index));
    const tok = m[0];
    if (m[1]) parent.append(el('code', null, tok.slice(1, -1)));
    else if (m[2]) parent.append(el('strong', null, tok.slice(2, -2)));
    else if (m[3]) parent.append(el('em', null, tok.slice(1, -1)));
    else {
      const close = tok.indexOf('](');
      const label = tok.slice(1, close);
      const href = safeUrl(tok.slice(close + 2, -1));
      if (href) {
        const a = el('a', null, label);
        a.href = href;
        a.rel = 'noopener noreferrer nofollow';
        a.target = '_blank';
        parent.append(a);
      } else parent.append(tok);
    }
    rest = rest.slice(m.index + tok.length);
  }
}

function inlineLines(parent, lines) {
  lines.forEach((line, i) => {
    if (i) parent.append(el('br'));
    inline(parent, line);
  });
}

/** Render the prose between code fences. */
function blocks(parent, text) {
  const lines = text.split('\n');
  let para = [];
  let list = null;
  const flush = () => {
    if (para.length) {
      const p = el('p');
      inlineLines(p, para);
      parent.append(p);
      para = [];
    }
  };
  for (const line of lines) {
    const h = /^(#{1,3})\s+(.*)$/.exec(line);
    const ul = /^\s*[-*]\s+(.*)$/.exec(line);
    const ol = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (h) {
      flush();
      list = null;
      const e = el(`h${h[1].length + 2}`);
      inline(e, h[2]);
      parent.append(e);
    } else if (ul || ol) {
      flush();
      const tag = ul ? 'ul' : 'ol';
      if (!list || list.tagName.toLowerCase() !== tag) {
        list = el(tag);
        parent.append(list);
      }
      const li = el('li');
      inline(li, (ul || ol)[1]);
      list.append(li);
    } else if (line.trim() === '') {
      flush();
      list = null;
    } else {
      list = null;
      para.push(line);
    }
  }
  flush();
}

/** Replace target's children with the rendering of text. */
export function renderMarkdown(target, text) {
  const frag = document.createDocumentFragment();
  const parts = text.split(/^```/m);
  parts.forEach((part, i) => {
    if (i % 2 === 0) {
      blocks(frag, part);
      return;
    }
    // a code block: "lang\ncode…" up to the next fence (or the end, while streaming)
    const nl = part.indexOf('\n');
    const lang = nl >= 0 ? part.slice(0, nl).trim() : '';
    let code = nl >= 0 ? part.slice(nl + 1) : '';
    if (code.endsWith('\n')) code = code.slice(0, -1);
    const pre = el('pre');
    const c = el('code', null, code);
    if (/^[\w+-]{1,20}$/.test(lang)) c.dataset.lang = lang;
    pre.append(c);
    frag.append(pre);
  });
  target.replaceChildren(frag);
}
