'use strict';
/*
 * Replays every protocol/golden/*.txt exchange against a fresh connection.
 * The format is documented in protocol/golden/README.md.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');

// LQ_GOLDEN_DIR replays another directory (e.g. while writing new exchanges).
const GOLDEN_DIR = process.env.LQ_GOLDEN_DIR || path.join(h.REPO, 'protocol', 'golden');
const files = fs.readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.txt')).sort();

/* Parses a golden file into directives: {kind, line, ...}. Throws on a malformed line. */
function parseGolden(name, text) {
  const out = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    const n = i + 1;
    const where = `${name}:${n}`;
    if (line.trim() === '' || line.startsWith('#')) return;
    if (line.startsWith('> ')) { out.push({ kind: 'send', text: line.slice(2), line: n }); return; }
    const expect = /^(<~?) (.*)$/.exec(line);
    if (expect) {
      let json;
      try { json = JSON.parse(expect[2]); } catch (e) { throw new Error(`${where}: expected frame is not JSON: ${e.message}`); }
      out.push({ kind: expect[1] === '<' ? 'expect' : 'expectAny', json, line: n });
      return;
    }
    const quiet = /^\. (\d+)$/.exec(line);
    if (quiet) { out.push({ kind: 'quiet', ms: Number(quiet[1]), line: n }); return; }
    const bang = /^! (publish|afterSave|afterDelete) (.*)$/.exec(line);
    if (bang) {
      try { JSON.parse(bang[2]); } catch (e) { throw new Error(`${where}: ! ${bang[1]} payload is not JSON: ${e.message}`); }
      out.push({ kind: bang[1], text: bang[2], line: n });
      return;
    }
    throw new Error(`${where}: unknown directive: ${line}`);
  });
  const last = out[out.length - 1];
  if (last && !['expect', 'expectAny', 'quiet'].includes(last.kind)) {
    throw new Error(`${name}:${last.line}: a golden file must end with an expectation (< or . N), not an unchecked ${last.kind}`);
  }
  return out;
}

/* Compares an expected golden JSON value with a received one.
 * Returns a list of mismatch descriptions (empty when equal). */
function compare(exp, act, ctx, p = '$') {
  if (typeof exp === 'string') {
    if (exp === '<uuid>' || exp === '<new-uuid>') {
      if (typeof act !== 'string' || !h.UUID_RE.test(act)) return [`${p}: expected a UUID v4, got ${JSON.stringify(act)}`];
      if (exp === '<new-uuid>' && (act === ctx.clientId || ctx.seenClientIds.includes(act))) return [`${p}: expected a new clientId, got the earlier ${act}`];
      return [];
    }
    if (exp.includes('<clientId>') || exp.includes('<*>')) {
      if (exp.includes('<clientId>') && !ctx.clientId) return [`${p}: <clientId> used before any connected frame`];
      const re = new RegExp(`^${exp.split(/(<clientId>|<\*>)/).map((part) => {
        if (part === '<clientId>') return ctx.clientId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        if (part === '<*>') return '[\\s\\S]*';
        return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      }).join('')}$`);
      if (typeof act !== 'string' || !re.test(act)) return [`${p}: expected ${JSON.stringify(exp)} (clientId ${ctx.clientId}), got ${JSON.stringify(act)}`];
      return [];
    }
    return exp === act ? [] : [`${p}: expected ${JSON.stringify(exp)}, got ${JSON.stringify(act)}`];
  }
  if (exp === null || typeof exp !== 'object') {
    return Object.is(exp, act) || exp === act ? [] : [`${p}: expected ${JSON.stringify(exp)}, got ${JSON.stringify(act)}`];
  }
  if (Array.isArray(exp)) {
    if (!Array.isArray(act)) return [`${p}: expected an array, got ${JSON.stringify(act)}`];
    if (exp.length !== act.length) return [`${p}: expected ${exp.length} items, got ${act.length}: ${JSON.stringify(act)}`];
    return exp.flatMap((e, i) => compare(e, act[i], ctx, `${p}[${i}]`));
  }
  if (act === null || typeof act !== 'object' || Array.isArray(act)) return [`${p}: expected an object, got ${JSON.stringify(act)}`];
  const errs = [];
  for (const k of Object.keys(exp)) {
    if (!(k in act)) errs.push(`${p}.${k}: missing (expected ${JSON.stringify(exp[k])})`);
    else errs.push(...compare(exp[k], act[k], ctx, `${p}.${k}`));
  }
  for (const k of Object.keys(act)) if (!(k in exp)) errs.push(`${p}.${k}: unexpected key (value ${JSON.stringify(act[k])})`);
  return errs;
}

function learn(frame, ctx) {
  if (frame && frame.op === 'connected' && typeof frame.clientId === 'string') {
    if (ctx.clientId) ctx.seenClientIds.push(ctx.clientId);
    ctx.clientId = frame.clientId;
  }
}

async function replay(name, directives, s) {
  const c = await h.wsClient(s.url);
  const ctx = { clientId: null, seenClientIds: [] };
  try {
    for (let i = 0; i < directives.length; i++) {
      const d = directives[i];
      const where = `${name}:${d.line}`;
      switch (d.kind) {
        case 'send':
          c.send(d.text);
          break;
        case 'expect': {
          const f = await c.next().catch((e) => { throw new Error(`${where}: ${e.message}\n  expected: ${JSON.stringify(d.json)}`); });
          const errs = compare(d.json, f, ctx);
          if (errs.length) {
            assert.fail(`${where}: frame mismatch\n  expected: ${JSON.stringify(d.json)}\n  received: ${JSON.stringify(f)}\n  ${errs.join('\n  ')}`);
          }
          learn(f, ctx);
          break;
        }
        case 'expectAny': {
          const group = [d];
          while (i + 1 < directives.length && directives[i + 1].kind === 'expectAny') group.push(directives[++i]);
          const got = [];
          for (let k = 0; k < group.length; k++) {
            got.push(await c.next().catch((e) => {
              throw new Error(`${name}:${group[0].line}: ${e.message}\n  expected ${group.length} frames in any order, got ${got.length}: ${got.map((x) => JSON.stringify(x)).join(' | ')}`);
            }));
          }
          const unmatched = [...got];
          for (const g of group) {
            const idx = unmatched.findIndex((f) => compare(g.json, f, ctx).length === 0);
            if (idx < 0) {
              assert.fail(`${name}:${g.line}: no frame of the unordered group matches\n  expected: ${JSON.stringify(g.json)}\n  received group: ${got.map((x) => JSON.stringify(x)).join('\n                  ')}`);
            }
            unmatched.splice(idx, 1);
          }
          got.forEach((f) => learn(f, ctx));
          break;
        }
        case 'quiet':
          await h.sleep(d.ms);
          if (c.pending.length) {
            assert.fail(`${where}: expected no frame for ${d.ms} ms, received: ${c.pending.map((x) => JSON.stringify(x)).join(' | ')}`);
          }
          break;
        case 'publish':
          await s.pub.raw(s.pub.channel, d.text);
          break;
        case 'afterSave':
          await s.pub.raw(`${h.APP_ID}afterSave`, d.text);
          break;
        case 'afterDelete':
          await s.pub.raw(`${h.APP_ID}afterDelete`, d.text);
          break;
        default:
          throw new Error(`${where}: unhandled directive ${d.kind}`);
      }
    }
    // Nothing may be left unread at the end of an exchange.
    assert.equal(c.pending.length, 0, `${name}: frames left unread at the end: ${c.pending.map((x) => JSON.stringify(x)).join(' | ')}`);
  } finally {
    await c.close();
  }
}

let s;
before(async () => {
  s = await h.startStack({ masterKey: h.MASTER_KEY });
});
after(h.teardown);

h.test('golden directory has exchanges', () => {
  assert.ok(files.length >= 30, `expected the golden files in ${GOLDEN_DIR}, found ${files.length}`);
});

for (const f of files) {
  const text = fs.readFileSync(path.join(GOLDEN_DIR, f), 'utf8');
  h.test(`golden ${f}`, async () => {
    const directives = parseGolden(f, text);
    assert.ok(directives.length > 0, `${f} is empty`);
    await replay(f, directives, s);
  });
}
