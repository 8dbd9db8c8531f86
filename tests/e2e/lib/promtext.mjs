// A strict parser of the Prometheus text exposition format 0.0.4, for tests
// (no parser package is vendored in tests/e2e/node_modules). It throws on
// anything a Prometheus server would reject or that breaks the format's
// rules, and checks the histogram invariants:
//   - metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*
//     (not starting with __), label values with only \\ \" \n escapes;
//   - at most one HELP and one TYPE per family, TYPE before its samples, a
//     family's samples contiguous, no duplicate series;
//   - values are floats, NaN or +Inf/-Inf; optional integer timestamp;
//   - counters are not negative; histograms have _bucket series with an le
//     label, le ascending and ending at +Inf, cumulative counts not
//     decreasing, +Inf bucket == _count, and a _sum.
// parse(text) -> Map(family name -> { type, help, samples: [{ name, labels, value }] }).

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(s, where) {
  if (s === 'NaN') return NaN;
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`${where}: bad value "${s}"`);
  return Number(s);
}

function parseLabels(s, where) {
  const labels = {};
  let i = 0;
  while (i < s.length) {
    const m = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(s.slice(i));
    if (!m) throw new Error(`${where}: bad label at "${s.slice(i)}"`);
    const name = m[1];
    if (name.startsWith('__')) throw new Error(`${where}: reserved label ${name}`);
    i += m[0].length;
    let v = '';
    for (;;) {
      if (i >= s.length) throw new Error(`${where}: unterminated label value`);
      const c = s[i++];
      if (c === '"') break;
      if (c === '\\') {
        const e = s[i++];
        if (e === '\\') v += '\\';
        else if (e === '"') v += '"';
        else if (e === 'n') v += '\n';
        else throw new Error(`${where}: bad escape \\${e}`);
      } else if (c === '\n') {
        throw new Error(`${where}: newline in label value`);
      } else v += c;
    }
    if (name in labels) throw new Error(`${where}: duplicate label ${name}`);
    labels[name] = v;
    if (i < s.length) {
      if (s[i] !== ',') throw new Error(`${where}: expected , between labels`);
      i++;
    }
  }
  return labels;
}

function familyOf(name, families) {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const f = families.get(base);
      if (f && (f.type === 'histogram' || f.type === 'summary')) return base;
    }
  }
  return name;
}

export function parse(text) {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map();
  const seen = new Set();
  const closed = new Set();
  let current = null;
  text
    .slice(0, -1)
    .split('\n')
    .forEach((line, idx) => {
      const where = `line ${idx + 1}`;
      if (line === '') return;
      if (line.startsWith('#')) {
        const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
        if (!m) return; // a plain comment
        const [, kind, name, rest] = m;
        if (!NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
        let f = families.get(name);
        if (!f) families.set(name, (f = { type: 'untyped', typed: false, help: undefined, samples: [] }));
        if (kind === 'HELP') {
          if (f.help !== undefined) throw new Error(`${where}: second HELP for ${name}`);
          f.help = rest;
        } else {
          if (f.typed) throw new Error(`${where}: second TYPE for ${name}`);
          if (f.samples.length) throw new Error(`${where}: TYPE after samples of ${name}`);
          if (!TYPES.has(rest)) throw new Error(`${where}: bad type ${rest}`);
          f.type = rest;
          f.typed = true;
        }
        return;
      }
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
      if (!m) throw new Error(`${where}: not a sample: ${JSON.stringify(line)}`);
      const [, name, labelText, valueText] = m;
      const labels = labelText ? parseLabels(labelText, where) : {};
      const value = parseValue(valueText, where);
      const fam = familyOf(name, families);
      let f = families.get(fam);
      if (!f) families.set(fam, (f = { type: 'untyped', typed: false, help: undefined, samples: [] }));
      if (current !== fam) {
        if (closed.has(fam)) throw new Error(`${where}: samples of ${fam} are not contiguous`);
        if (current) closed.add(current);
        current = fam;
      }
      const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
      if (seen.has(key)) throw new Error(`${where}: duplicate series ${key}`);
      seen.add(key);
      if (f.type === 'counter' && !(value >= 0)) throw new Error(`${where}: negative counter`);
      if (f.type === 'histogram' && name === fam) throw new Error(`${where}: bare sample in histogram ${fam}`);
      f.samples.push({ name, labels, value });
    });
  for (const [name, f] of families) if (f.type === 'histogram') checkHistogram(name, f);
  return families;
}

function checkHistogram(name, f) {
  const groups = new Map();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    if (!groups.has(key)) groups.set(key, { buckets: [], sum: undefined, count: undefined });
    const g = groups.get(key);
    if (s.name === `${name}_bucket`) {
      if (le === undefined) throw new Error(`${name}: bucket without le`);
      g.buckets.push([parseValue(le, name), s.value]);
    } else if (s.name === `${name}_sum`) g.sum = s.value;
    else if (s.name === `${name}_count`) g.count = s.value;
  }
  for (const [key, g] of groups) {
    if (!g.buckets.length || g.sum === undefined || g.count === undefined) {
      throw new Error(`${name}${key}: histogram needs buckets, _sum and _count`);
    }
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(g.buckets[i][0] > g.buckets[i - 1][0])) throw new Error(`${name}${key}: le not ascending`);
      if (g.buckets[i][1] < g.buckets[i - 1][1]) throw new Error(`${name}${key}: buckets not cumulative`);
    }
    const last = g.buckets[g.buckets.length - 1];
    if (last[0] !== Infinity) throw new Error(`${name}${key}: no +Inf bucket`);
    if (last[1] !== g.count) throw new Error(`${name}${key}: +Inf bucket ${last[1]} != _count ${g.count}`);
  }
}

/** The value of one series (labels must match exactly), or undefined. */
export function value(families, name, labels = {}) {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      const a = Object.entries(s.labels).sort();
      const b = Object.entries(labels).sort();
      if (JSON.stringify(a) === JSON.stringify(b)) return s.value;
    }
  }
  return undefined;
}
