#!/usr/bin/python3
"""Markdown report from a bench results.jsonl: livequeryd against Parse Server side by side.

    bench/report.py RESULTS.jsonl [--title T] [--meta KEY=VALUE ...] > report.md

One JSON object per line (lq_bench --json, with "id" and "server" added by run.sh; or a
tailer record with id "tailer"). Numeric fields that are missing or negative were not
measured and print as "–". Records with "ok": false are shown with their failure and never
used for a ratio or a target. Exits 0 whatever the benchmark outcome; 2 on a usage error.

When several records share an id and a server (e.g. livequeryd on two event loops), the
tables show each livequeryd record as its own row block against the same Parse record; the
targets use the first record that succeeded (the "primary" one).
"""
import argparse
import json
import math
import sys

OURS = "livequeryd"
PEER = "parse-server"
OURS_NAME = "livequeryd"
PEER_NAME = "Parse Server 9.10"

# id -> description; the order is the table order
DESCRIPTIONS = {
    "b1k": "broadcast, 1,000 connections × 1 subscription, full speed",
    "b10k": "broadcast, 10,000 connections × 1 subscription, full speed",
    "b1k-15k": "broadcast, 1,000 subscribers × 15 events/s = 15,000 deliveries/s",
    "b10k-15k": "broadcast, 10,000 subscribers × 1.5 events/s = 15,000 deliveries/s",
    "b1k-burst": "broadcast, 1,000 subscribers, events in bursts",
    "s1k": "selective, 1,000 connections × 1 distinct subscription, full speed",
    "s10k": "selective, 1,000 connections × 10 distinct subscriptions, full speed",
    "s100k": "selective, 1,000 connections × 100 distinct subscriptions, full speed",
    "s10k-conns": "selective, 10,000 connections × 1 distinct subscription",
    "acl1k": "broadcast, 1,000 subscribers, each a distinct user, half the objects role-restricted",
    "idle10k": "idle, 10,000 connections × 1 subscription, no events",
    "idle19k": "idle, 19,000 connections × 1 subscription, no events",
}
BROADCAST_IDS = ["b1k", "b10k", "b1k-15k", "b10k-15k", "b1k-burst"]
SELECTIVE_IDS = ["s1k", "s10k", "s100k", "s10k-conns"]
ACL_IDS = ["acl1k"]
FULL_SPEED_IDS = {"b1k", "b10k", "s1k", "s10k", "s100k", "acl1k"}

DAGGER = "†"
QUEUEING_NOTE = (DAGGER + " Full speed (rate 0): every event is published at once, so this latency is "
                 "mostly queueing in the server, the kernel and the client, not a per-event service "
                 "time. Compare latency only at a fixed rate (b1k-15k, b10k-15k).")


# ---------------------------------------------------------------- values and formatting

def num(rec, key):
    """A measured number, or None (missing, not a number, negative, NaN)."""
    if rec is None:
        return None
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if math.isnan(v) or math.isinf(v) or v < 0:
        return None
    return float(v)


def div(a, b, scale=1.0):
    if a is None or b is None or b <= 0:
        return None
    return a * scale / b


def is_ok(rec):
    return rec is not None and rec.get("ok") is True


def fmt_int(v):
    return "–" if v is None else "{:,.0f}".format(v)


def fmt_2(v):
    if v is None:
        return "–"
    if v >= 1000:
        return "{:,.0f}".format(v)
    if v >= 100:
        return "{:.1f}".format(v)
    return "{:.2f}".format(v)


def fmt_1(v):
    if v is None:
        return "–"
    if v >= 1000:
        return "{:,.0f}".format(v)
    return "{:.1f}".format(v)


def fmt_x(r):
    if r >= 100:
        return "{:,.0f}×".format(r)
    if r >= 10:
        return "{:.1f}×".format(r)
    return "{:.2f}×".format(r)


def compare(ours, peer, better):
    """'N× better' / 'N× worse' for livequeryd against Parse, or '–'."""
    if better not in ("higher", "lower") or ours is None or peer is None:
        return "–"
    a, b = (ours, peer) if better == "higher" else (peer, ours)
    if a <= 0 or b <= 0:
        return "–"
    r = a / b
    if abs(r - 1) < 0.005:
        return "same (1.00×)"
    if r > 1:
        return "**{} better**".format(fmt_x(r))
    return "**{} worse**".format(fmt_x(1 / r))


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header, aligns, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if a == "r" else "---" for a in aligns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(cell(c) for c in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------- figures
# (name, getter(rec) -> float|None, formatter, better: "higher"|"lower"|None, is_latency)

def F(name, getter, fmt, better, latency=False):
    return (name, getter, fmt, better, latency)


def field(key):
    return lambda r: num(r, key)


def kb_to_mb(key):
    return lambda r: div(num(r, key), 1024.0)


def bytes_to_kb(key):
    return lambda r: div(num(r, key), 1024.0)


def conns_per_s(r):
    return div(num(r, "connections"), num(r, "connect_subscribe_s"))


FIG_RESULT_SHAPE = F("connections × subscriptions/conn", None, None, None)
FIG_DPS = F("deliveries/s", field("deliveries_per_s"), fmt_int, "higher")
FIG_P50 = F("latency p50 (ms)", field("lat_p50_ms"), fmt_2, "lower", True)
FIG_P99 = F("latency p99 (ms)", field("lat_p99_ms"), fmt_2, "lower", True)
FIG_P999 = F("latency p99.9 (ms)", field("lat_p999_ms"), fmt_2, "lower", True)
FIG_CPU = F("server CPU µs per delivery", field("cpu_us_per_delivery"), fmt_2, "lower")
FIG_CPU_EVENT = F("server CPU µs per event", field("cpu_us_per_delivery"), fmt_2, "lower")
FIG_CPU_PCT = F("server CPU (% of 1 core)", field("server_cpu_pct"), fmt_1, None)
FIG_RSS_REST = F("RSS at rest (MB)", kb_to_mb("server_rss_before_kb"), fmt_1, "lower")
FIG_RSS_SUB = F("RSS after subscribe (MB)", kb_to_mb("server_rss_after_sub_kb"), fmt_1, "lower")
FIG_RSS_PEAK = F("RSS peak (MB)", kb_to_mb("server_rss_peak_kb"), fmt_1, "lower")
FIG_RSS_CONN = F("RSS per connection (KB)", bytes_to_kb("rss_per_conn_bytes"), fmt_2, "lower")
FIG_RSS_SUBN = F("RSS per subscription (KB)", bytes_to_kb("rss_per_sub_bytes"), fmt_2, "lower")
FIG_CONNS = F("connections", field("connections"), fmt_int, None)
FIG_SUBS = F("subscriptions", field("subscriptions"), fmt_int, None)
FIG_CONNECT_S = F("connect + subscribe (s)", field("connect_subscribe_s"), fmt_2, "lower")
FIG_CONNECT_RATE = F("connections/s (connect + subscribe)", conns_per_s, fmt_int, "higher")
FIG_LOST = F("deliveries lost", field("lost"), fmt_int, "lower")

BROADCAST_FIGS = [FIG_DPS, FIG_P50, FIG_P99, FIG_P999, FIG_CPU, FIG_CPU_PCT, FIG_RSS_SUB, FIG_RSS_CONN, FIG_LOST]
SELECTIVE_FIGS = [FIG_SUBS, FIG_DPS, FIG_CPU_EVENT, FIG_P50, FIG_P99, FIG_P999, FIG_CPU_PCT, FIG_RSS_SUB,
                  FIG_RSS_SUBN, FIG_LOST]
CONNECT_FIGS = [FIG_CONNECT_S, FIG_CONNECT_RATE]
IDLE_FIGS = [FIG_RSS_REST, FIG_RSS_SUB, FIG_RSS_PEAK, FIG_RSS_CONN]
ACL_FIGS = BROADCAST_FIGS


# ---------------------------------------------------------------- loading

class Data:
    def __init__(self):
        self.records = []          # every parsed record, file order
        self.bad_lines = []        # (line number, reason)
        self.no_id = []            # records without an id
        self.by = {}               # (id, server) -> [records]
        self.ids = []              # ids in file order

    def add(self, rec):
        self.records.append(rec)
        rid = rec.get("id")
        if not isinstance(rid, str) or not rid:
            self.no_id.append(rec)
            return
        srv = server_of(rec)
        self.by.setdefault((rid, srv), []).append(rec)
        if rid not in self.ids:
            self.ids.append(rid)

    def all(self, rid, srv):
        return self.by.get((rid, srv), [])

    def primary(self, rid, srv):
        recs = self.all(rid, srv)
        for r in recs:
            if is_ok(r):
                return r
        return recs[0] if recs else None

    def ok(self, rid, srv):
        r = self.primary(rid, srv)
        return r if is_ok(r) else None


def server_of(rec):
    s = str(rec.get("server") or OURS).strip().lower()
    if s.startswith("parse"):
        return PEER
    if s.startswith("livequeryd"):
        return OURS
    return s


def load(path):
    d = Data()
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                d.bad_lines.append((n, "not JSON: {}".format(e)))
                continue
            if not isinstance(rec, dict):
                d.bad_lines.append((n, "not a JSON object"))
                continue
            d.add(rec)
    return d


# ---------------------------------------------------------------- scenario tables

def describe(rid, rec):
    desc = DESCRIPTIONS.get(rid)
    if desc is None and rid.startswith("idle"):
        desc = "idle, {} connections × 1 subscription, no events".format(fmt_int(num(rec, "connections")))
    if desc is None:
        desc = str(rec.get("label") or rec.get("scenario") or "") if rec else ""
    if rec is not None and num(rec, "burst") is not None:
        desc += " of {} events every {} ms".format(fmt_int(num(rec, "burst")), fmt_int(num(rec, "burst_interval_ms")))
    return desc


def full_speed(rid, recs):
    for r in recs:
        if r is None:
            continue
        if num(r, "burst") is not None:
            return False
        rate = num(r, "rate")
        if rate is not None:
            return rate == 0
    return rid in FULL_SPEED_IDS


def status(rec):
    if rec is None:
        return "not run"
    if is_ok(rec):
        return "ok"
    return "**FAILED**: {}".format(rec.get("failure") or "(no reason given)")


def shape(rec):
    if rec is None:
        return "–"
    return "{} × {}".format(fmt_int(num(rec, "connections")), fmt_int(num(rec, "subs_per_conn")))


def value(rec, fig):
    name, getter, fmt, better, _ = fig
    v = getter(rec) if rec is not None else None
    text = fmt(v)
    if rec is not None and not is_ok(rec) and v is not None:
        text = "_{}_ (failed run)".format(text)
    return v, text


def variant_tag(recs, i):
    loops = [r.get("event_loop") for r in recs]
    if all(isinstance(x, str) and x for x in loops) and len(set(loops)) == len(loops):
        return loops[i]
    return "run {}".format(i + 1)


def blocks_for(d, rid):
    """[(suffix, ours_rec|None, peer_rec|None)] for one id."""
    ours = d.all(rid, OURS)
    peers = d.all(rid, PEER)
    peer = d.primary(rid, PEER)
    out = []
    if len(ours) <= 1:
        out.append(("", ours[0] if ours else None, peer))
    else:
        for i, r in enumerate(ours):
            out.append((" [{}]".format(variant_tag(ours, i)), r, peer))
    for i, r in enumerate(peers):
        if r is not peer:
            out.append((" [Parse run {}]".format(i + 1), None, r))
    return out


def scenario_table(d, ids, figs, extra_rows=None):
    """Markdown table for the ids present; '' when none is."""
    rows = []
    used_dagger = False
    any_failed_value = False
    for rid in ids:
        if not d.all(rid, OURS) and not d.all(rid, PEER):
            continue
        fs = full_speed(rid, d.all(rid, OURS) + d.all(rid, PEER))
        for suffix, o, p in blocks_for(d, rid):
            ref = o if o is not None else p
            rows.append(["**{}**{}".format(rid, suffix) + (" — " + describe(rid, ref) if describe(rid, ref) else ""),
                         "result (connections × subscriptions/conn)",
                         "{} ({})".format(status(o), shape(o)) if o is not None else "not run",
                         "{} ({})".format(status(p), shape(p)) if p is not None else "not run",
                         ""])
            for fig in figs:
                ov, ot = value(o, fig)
                pv, pt = value(p, fig)
                if ov is None and pv is None:
                    continue
                if (o is not None and not is_ok(o) and ov is not None) or \
                        (p is not None and not is_ok(p) and pv is not None):
                    any_failed_value = True
                cmp = compare(ov if is_ok(o) else None, pv if is_ok(p) else None, fig[3])
                if fig[3] and ((o is not None and not is_ok(o)) or (p is not None and not is_ok(p))):
                    cmp = "– (failed run)"
                name = fig[0]
                if fig[4] and fs:
                    name += DAGGER
                    used_dagger = True
                rows.append(["", name, ot, pt, cmp])
            for er in (extra_rows(rid, o, p) if extra_rows else []):
                rows.append(er)
    if not rows:
        return ""
    out = [table(["scenario", "figure", OURS_NAME, PEER_NAME, "livequeryd vs Parse"],
                 ["l", "l", "r", "r", "r"], rows)]
    notes = []
    if used_dagger:
        notes.append(QUEUEING_NOTE)
    if any_failed_value:
        notes.append("Values in _italics_ come from a failed run: shown for diagnosis, never compared.")
    if notes:
        out.append("")
        out.append("\n\n".join(notes))
    return "\n".join(out)


def selective_growth_rows(d):
    base_o = num(d.ok("s1k", OURS), "cpu_us_per_delivery")
    base_p = num(d.ok("s1k", PEER), "cpu_us_per_delivery")

    def rows(rid, o, p):
        if rid not in ("s10k", "s100k"):
            return []
        go = div(num(o, "cpu_us_per_delivery"), base_o) if is_ok(o) else None
        gp = div(num(p, "cpu_us_per_delivery"), base_p) if is_ok(p) else None
        if go is None and gp is None:
            return []
        f = lambda g: "–" if g is None else fmt_x(g)
        return [["", "CPU per event, growth from s1k", f(go), f(gp), compare(go, gp, "lower")]]
    return rows


# ---------------------------------------------------------------- sections

def section_failures(d):
    failed = [r for r in d.records if not is_ok(r)]
    lines = []
    if failed:
        rows = [[str(r.get("id") or "(no id)"), server_of(r) if r.get("id") else str(r.get("server") or "?"),
                 str(r.get("label") or ""), str(r.get("failure") or "(no reason given)")] for r in failed]
        lines.append("**{} failed record{}** (shown in the tables, never used for a ratio or a target):".format(
            len(failed), "" if len(failed) == 1 else "s"))
        lines.append("")
        lines.append(table(["id", "server", "label", "failure"], ["l", "l", "l", "l"], rows))
    if d.no_id:
        lines.append("")
        lines.append("{} record(s) without an \"id\" (not placed in any table): {}.".format(
            len(d.no_id), "; ".join("label \"{}\" ({})".format(r.get("label", "?"), status(r)) for r in d.no_id)))
    if d.bad_lines:
        lines.append("")
        lines.append("Unreadable lines: {}.".format("; ".join("line {}: {}".format(n, why) for n, why in d.bad_lines)))
    return "\n".join(lines)


def section_connect(d):
    ids = [i for i in ["b1k", "b10k"] if i in d.ids]
    idle = sorted([i for i in d.ids if is_idle(d, i)],
                  key=lambda i: num(d.primary(i, OURS) or d.primary(i, PEER), "connections") or 0)
    return scenario_table(d, ids + idle, CONNECT_FIGS)


def is_idle(d, rid):
    if rid.startswith("idle"):
        return True
    r = d.primary(rid, OURS) or d.primary(rid, PEER)
    return r is not None and r.get("scenario") == "idle"


def section_idle(d):
    idle = sorted([i for i in d.ids if is_idle(d, i)],
                  key=lambda i: num(d.primary(i, OURS) or d.primary(i, PEER), "connections") or 0)
    return scenario_table(d, idle, IDLE_FIGS)


def section_acl(d):
    t = scenario_table(d, ACL_IDS, ACL_FIGS)
    if not t:
        return ""
    a, b = d.ok("acl1k", OURS), d.ok("b1k", OURS)
    if a and b:
        bits = []
        dv = div(num(a, "deliveries_per_s"), num(b, "deliveries_per_s"))
        if dv is not None:
            bits.append("deliveries/s {} of b1k's ({} vs {})".format(
                fmt_x(dv), fmt_int(num(a, "deliveries_per_s")), fmt_int(num(b, "deliveries_per_s"))))
        cv = div(num(a, "cpu_us_per_delivery"), num(b, "cpu_us_per_delivery"))
        if cv is not None:
            bits.append("server CPU per delivery {} of b1k's ({} vs {} µs)".format(
                fmt_x(cv), fmt_2(num(a, "cpu_us_per_delivery")), fmt_2(num(b, "cpu_us_per_delivery"))))
        if bits:
            t += "\n\nCost of ACL checks (livequeryd, acl1k against b1k, same run): " + "; ".join(bits) + "."
    return t


TAILER_FIELDS = [
    ("events_per_s", "events/s (tailer: read, convert, publish)", fmt_int),
    ("baseline_events_per_s", "events/s (baseline: read the change stream only)", fmt_int),
    ("cpu_us_per_event", "tailer CPU µs per event", fmt_2),
    ("redis_cpu_us_per_event", "redis-server CPU µs per event", fmt_2),
]


def section_tailer(d):
    recs = [r for (rid, _), rs in d.by.items() if rid == "tailer" for r in rs]
    if not recs:
        return ""
    parts = []
    for i, r in enumerate(recs):
        rows = [["result", status(r)]]
        known = set(["id", "server", "ok", "failure", "label"])
        for key, name, fmt in TAILER_FIELDS:
            known.add(key)
            v = num(r, key)
            rows.append([name, fmt(v) if is_ok(r) or v is None else "_{}_ (failed run)".format(fmt(v))])
        ratio = div(num(r, "events_per_s"), num(r, "baseline_events_per_s"))
        if ratio is not None and is_ok(r):
            rows.append(["tailer / baseline events/s", fmt_x(ratio)])
        for key in sorted(r):
            if key not in known and num(r, key) is not None:
                rows.append([key, fmt_2(num(r, key))])
        title = "{} ({})".format(server_of(r), r.get("label")) if r.get("label") else server_of(r)
        parts.append(("" if len(recs) == 1 else "Tailer record {}: {}\n\n".format(i + 1, title)) +
                     table(["figure", "value"], ["l", "r"], rows))
    return "\n\n".join(parts)


# ---------------------------------------------------------------- targets

def loop_note(rec):
    el = rec.get("event_loop") if rec else None
    return " ({})".format(el) if isinstance(el, str) and el else ""


def failed_note(d, rid, srv):
    r = d.primary(rid, srv)
    if r is not None and not is_ok(r):
        return "{} {} failed: {}".format(rid, "livequeryd" if srv == OURS else "Parse",
                                         r.get("failure") or "no reason given")
    return None


def target_broadcast(d, rid):
    name = "{}: broadcast deliveries/s ≥ 50× Parse's (same run)".format(rid)
    o, p = d.ok(rid, OURS), d.ok(rid, PEER)
    why = [x for x in (failed_note(d, rid, OURS), failed_note(d, rid, PEER)) if x]
    if not d.all(rid, OURS):
        why.append("no livequeryd record")
    if not d.all(rid, PEER):
        why.append("no Parse record")
    ov, pv = num(o, "deliveries_per_s"), num(p, "deliveries_per_s")
    if o is not None and ov is None:
        why.append("livequeryd deliveries/s not measured")
    if p is not None and pv is None:
        why.append("Parse deliveries/s not measured")
    if ov is None or pv is None or pv <= 0:
        measured = "livequeryd {}, Parse {}".format(fmt_int(ov), fmt_int(pv))
        return [name, measured, "NOT MEASURED ({})".format("; ".join(why) or "missing data")]
    r = ov / pv
    measured = "{} vs {} deliveries/s{} = {} Parse".format(fmt_int(ov), fmt_int(pv), loop_note(o), fmt_x(r))
    if r >= 50:
        return [name, measured, "MET"]
    return [name, measured, "MISSED by {} ({} of the 50× asked; {} deliveries/s short)".format(
        fmt_x(50 / r), fmt_x(r), fmt_int(50 * pv - ov))]


def target_latency(d, rid, subs_text):
    name = "p99 latency ≤ 5 ms at 15,000 deliveries/s ({}, {})".format(rid, subs_text)
    o, p = d.ok(rid, OURS), d.ok(rid, PEER)
    ov, pv = num(o, "lat_p99_ms"), num(p, "lat_p99_ms")
    peer_txt = "Parse p99 {} ms".format(fmt_2(pv)) if pv is not None else \
        ("Parse: " + (failed_note(d, rid, PEER) or "not run"))
    if ov is None:
        why = failed_note(d, rid, OURS) or ("livequeryd p99 not measured" if o is not None else "no livequeryd record")
        return [name, peer_txt, "NOT MEASURED ({})".format(why)]
    measured = "{} ms at {} deliveries/s{}; {}".format(fmt_2(ov), fmt_int(num(o, "deliveries_per_s")),
                                                     loop_note(o), peer_txt)
    if pv is not None and ov > 0:
        measured += " ({})".format(compare(ov, pv, "lower").replace("*", ""))
    if ov <= 5:
        return [name, measured, "MET"]
    return [name, measured, "MISSED by {} ms ({} the 5 ms asked)".format(fmt_2(ov - 5), fmt_x(ov / 5))]


def target_selective(d):
    name = "selective: server CPU per event grows ≤ 2× from s1k to s100k"

    def chain(srv):
        vals = [(rid, num(d.ok(rid, srv), "cpu_us_per_delivery")) for rid in ("s1k", "s10k", "s100k")]
        txt = " → ".join("{} {}".format(rid, fmt_2(v) + " µs" if v is not None else "–") for rid, v in vals)
        base = vals[0][1]
        growth = {rid: div(v, base) for rid, v in vals[1:]}
        g = [("to {} {}".format(rid, fmt_x(growth[rid]))) for rid in ("s10k", "s100k") if growth[rid] is not None]
        return txt + (" (growth " + ", ".join(g) + ")" if g else ""), growth.get("s100k")

    otxt, og = chain(OURS)
    ptxt, pg = chain(PEER)
    measured = "livequeryd: {}".format(otxt)
    if any(d.all(rid, PEER) for rid in ("s1k", "s10k", "s100k")):
        measured += "; Parse: {}".format(ptxt)
    if og is None:
        why = [x for x in (failed_note(d, "s1k", OURS), failed_note(d, "s100k", OURS)) if x]
        for rid in ("s1k", "s100k"):
            if not d.all(rid, OURS):
                why.append("no livequeryd {} record".format(rid))
        return [name, measured, "NOT MEASURED ({})".format("; ".join(why) or "CPU per event not measured")]
    if og <= 2:
        return [name, measured, "MET"]
    return [name, measured, "MISSED by {} (grew {}, 2× allowed)".format(fmt_x(og / 2), fmt_x(og))]


def largest_idle(d, srv):
    """(largest ok idle record, largest idle record of any outcome) for one server."""
    recs = [r for rid in d.ids if is_idle(d, rid) for r in d.all(rid, srv)]
    key = lambda r: num(r, "connections") or 0
    oks = [r for r in recs if is_ok(r)]
    return (max(oks, key=key) if oks else None), (max(recs, key=key) if recs else None)


def bigger_failed_note(ok_rec, any_rec):
    if any_rec is not None and not is_ok(any_rec) and \
            (ok_rec is None or (num(any_rec, "connections") or 0) > (num(ok_rec, "connections") or 0)):
        return "{} ({} connections) failed: {}".format(any_rec.get("id"), fmt_int(num(any_rec, "connections")),
                                                      any_rec.get("failure") or "no reason given")
    return None


def target_idle_memory(d):
    name = "≤ 3 KB of user-space memory (RSS) per idle subscribed connection"
    o, oa = largest_idle(d, OURS)
    p, pa = largest_idle(d, PEER)
    ov = num(o, "rss_per_conn_bytes")
    pv = num(p, "rss_per_conn_bytes")
    peer_txt = ""
    if pv is not None:
        peer_txt = "; Parse {} KB ({}, {} connections)".format(fmt_2(pv / 1024), p.get("id"),
                                                              fmt_int(num(p, "connections")))
    note = bigger_failed_note(o, oa)
    if ov is None:
        why = note or ("RSS per connection not measured" if o is not None else "no successful livequeryd idle record")
        return [name, peer_txt.lstrip("; ") or "–", "NOT MEASURED ({})".format(why)]
    measured = "{} KB ({}, {} connections{}){}".format(fmt_2(ov / 1024), o.get("id"), fmt_int(num(o, "connections")),
                                                       loop_note(o).replace(" (", ", ").rstrip(")"), peer_txt)
    if pv is not None and ov > 0:
        measured += " — {}".format(compare(ov, pv, "lower").replace("*", ""))
    if note:
        measured += "; " + note
    if ov <= 3 * 1024:
        return [name, measured, "MET"]
    return [name, measured, "MISSED by {} KB ({} the 3 KB asked)".format(fmt_2(ov / 1024 - 3), fmt_x(ov / 3072))]


def target_connections(d):
    name = "50,000 connections held (largest idle run)"
    o, oa = largest_idle(d, OURS)
    p, pa = largest_idle(d, PEER)
    n = num(o, "connections")
    note = bigger_failed_note(o, oa)
    peer_txt = ""
    if p is not None:
        peer_txt = "; Parse held {} ({})".format(fmt_int(num(p, "connections")), p.get("id"))
    pn = bigger_failed_note(p, pa)
    if pn:
        peer_txt += "; Parse " + pn
    if n is None:
        why = note or "no successful livequeryd idle record"
        return [name, peer_txt.lstrip("; ") or "–", "NOT MEASURED ({})".format(why)]
    measured = "{} connections ({}){}".format(fmt_int(n), o.get("id"), peer_txt)
    if note:
        measured += "; livequeryd " + note
    if n >= 50000:
        return [name, measured, "MET"]
    return [name, measured, "MISSED by {} connections ({:.0f}% of 50,000 held)".format(
        fmt_int(50000 - n), 100.0 * n / 50000)]


def target_rest(d):
    name = "RSS at rest < 10 MB"
    recs = [(rid, r) for rid in d.ids for r in d.all(rid, OURS)
            if is_ok(r) and num(r, "server_rss_before_kb") is not None]
    peer = [num(r, "server_rss_before_kb") for rid in d.ids for r in d.all(rid, PEER)
            if is_ok(r) and num(r, "server_rss_before_kb") is not None]
    peer_txt = "; Parse {} MB".format(fmt_1(max(peer) / 1024)) if peer else ""
    if not recs:
        return [name, peer_txt.lstrip("; ") or "–",
                "NOT MEASURED (no successful livequeryd record with server_rss_before_kb)"]
    rid, worst = max(recs, key=lambda x: num(x[1], "server_rss_before_kb"))
    hi = num(worst, "server_rss_before_kb")
    lo = min(num(r, "server_rss_before_kb") for _, r in recs)
    measured = "{} MB (highest of {} fresh starts, in {}{}; lowest {} MB){}".format(
        fmt_1(hi / 1024), len(recs), rid, loop_note(worst), fmt_1(lo / 1024), peer_txt)
    if peer:
        measured += " — {}".format(compare(hi, max(peer), "lower").replace("*", ""))
    if hi < 10 * 1024:
        return [name, measured, "MET"]
    return [name, measured, "MISSED by {} MB ({} the 10 MB asked)".format(fmt_1(hi / 1024 - 10), fmt_x(hi / 10240))]


def section_targets(d):
    rows = [target_broadcast(d, "b1k"), target_broadcast(d, "b10k"),
            target_latency(d, "b1k-15k", "1,000 subscribers")]
    if d.all("b10k-15k", OURS):
        rows.append(target_latency(d, "b10k-15k", "10,000 subscribers"))
    rows += [target_selective(d), target_idle_memory(d), target_connections(d), target_rest(d)]
    for r in rows:
        if r[2] in ("MET",):
            r[2] = "**MET**"
        elif r[2].startswith("MISSED"):
            r[2] = "**MISSED**" + r[2][len("MISSED"):]
    return table(["target", "measured", "verdict"], ["l", "l", "l"], rows)


# ---------------------------------------------------------------- main

def main(argv):
    ap = argparse.ArgumentParser(description="Markdown report from bench results.jsonl (livequeryd vs Parse Server)")
    ap.add_argument("results", help="results.jsonl")
    ap.add_argument("--title", default="livequeryd vs Parse Server 9.10 LiveQuery: benchmark")
    ap.add_argument("--meta", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                    help="header line(s), e.g. --meta machine='2 cores, AMD EPYC' commit=abc123 date=2026-12-02")
    args = ap.parse_args(argv)
    try:
        d = load(args.results)
    except OSError as e:
        print("report.py: {}".format(e), file=sys.stderr)
        return 2

    out = ["# " + args.title, ""]
    metas = [m for group in args.meta for m in group]
    for m in metas:
        if "=" in m:
            k, v = m.split("=", 1)
            out.append("- **{}**: {}".format(k.strip(), v.strip()))
        else:
            out.append("- {}".format(m))
    n_o = sum(1 for r in d.records if r.get("id") and server_of(r) == OURS)
    n_p = sum(1 for r in d.records if r.get("id") and server_of(r) == PEER)
    loops = sorted(set(str(r["event_loop"]) for r in d.records if r.get("event_loop")))
    out.append("- **records**: {} ({} livequeryd, {} Parse Server; {} failed){}".format(
        len(d.records), n_o, n_p, sum(1 for r in d.records if not is_ok(r)),
        "; livequeryd event loop: " + ", ".join(loops) if loops else ""))
    out.append("")
    out.append("Both servers measured in the same run by the same load generator. \"livequeryd vs Parse\": "
               "livequeryd / Parse where higher is better, Parse / livequeryd where lower is better, "
               "phrased as \"N× better\" or \"N× worse\" for livequeryd. \"–\": not measured.")
    out.append("")

    fail = section_failures(d)
    if fail:
        out += ["## Failures", "", fail, ""]

    sections = [
        ("Broadcast", scenario_table(d, BROADCAST_IDS, BROADCAST_FIGS)),
        ("Selective (each event matches one subscription; one event = one delivery)",
         scenario_table(d, SELECTIVE_IDS, SELECTIVE_FIGS, selective_growth_rows(d))),
        ("Connect storm (open every connection, subscribe, wait for every `subscribed`)", section_connect(d)),
        ("Idle connections and memory", section_idle(d)),
        ("ACL", section_acl(d)),
        ("Tailer (MongoDB change stream → Redis)", section_tailer(d)),
    ]
    known = set(BROADCAST_IDS + SELECTIVE_IDS + ACL_IDS + ["tailer"])
    other = [i for i in d.ids if i not in known and not is_idle(d, i)]
    if other:
        sections.append(("Other scenarios", scenario_table(d, other, BROADCAST_FIGS)))
    for title, body in sections:
        if body:
            out += ["## " + title, "", body, ""]

    out += ["## Targets", "", section_targets(d), ""]
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
