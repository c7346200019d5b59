#!/usr/bin/env bash
# PNG plots from a bench results.jsonl: livequeryd against Parse Server, same run.
#
#   bench/plot.sh RESULTS.jsonl OUTDIR
#
# Writes into OUTDIR (each skipped, with a message on stderr, when its data is absent):
#   deliveries.png  broadcast deliveries/s at full speed against subscribers (b1k, b10k), log y
#   latency.png     p50 / p99 / p99.9 at the fixed-rate broadcast points (b1k-15k, b10k-15k,
#                   b1k-burst), log y
#   selective.png   server CPU µs per event against distinct subscriptions (s1k, s10k, s100k), log-log
#   connect.png     connect + subscribe time against connections (b1k, b10k, idle*), log-log
#   memory.png      RSS per connection and RSS after subscribe against connections (b1k, b10k, idle*)
# Only records with "ok": true are plotted; for an (id, server) seen twice, the first that
# succeeded. LQ_PLOT_WHERE (e.g. "2-core AMD EPYC, loopback") is added to every title;
# LQ_PLOT_KEEP=1 keeps the temporary .dat/.gp files (path printed on stderr).
# Installs gnuplot (gnuplot-nox, apt) when missing. Exits non-zero only on a real error
# (bad arguments, unreadable input, gnuplot missing or failing), not for absent data.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 RESULTS.jsonl OUTDIR" >&2
    exit 2
fi
RESULTS=$1
OUTDIR=$2
if [ ! -r "$RESULTS" ]; then
    echo "plot.sh: cannot read $RESULTS" >&2
    exit 2
fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
RESULTS=$(cd "$(dirname "$RESULTS")" && pwd)/$(basename "$RESULTS")

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "plot.sh: gnuplot not found, installing gnuplot-nox" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null; }; then
        echo "plot.sh: could not install gnuplot-nox" >&2
        exit 1
    fi
    command -v gnuplot >/dev/null 2>&1 || { echo "plot.sh: gnuplot still missing" >&2; exit 1; }
fi

if gnuplot -e 'set terminal pngcairo' </dev/null >/dev/null 2>&1; then
    TERMINAL=pngcairo
else
    TERMINAL=png
fi

TMP=$(mktemp -d)
[ -n "${LQ_PLOT_KEEP:-}" ] && echo "plot.sh: keeping $TMP" >&2 || trap 'rm -rf "$TMP"' EXIT

# python writes one .dat file (tab-separated, "?" = missing) and one .gp script per plot
/usr/bin/python3 - "$RESULTS" "$TMP" "$OUTDIR" "$TERMINAL" "${LQ_PLOT_WHERE:-}" <<'PY'
import json, math, os, sys

results, tmp, outdir, terminal, where = sys.argv[1:6]
OURS, PEER = "livequeryd", "parse-server"
NAMES = {OURS: "livequeryd", PEER: "Parse Server 9.10"}
COLORS = {OURS: "#1f5fbf", PEER: "#d62728"}
PTS = {OURS: 7, PEER: 5}

def warn(msg):
    print("plot.sh: " + msg, file=sys.stderr)

def num(r, k):
    v = r.get(k) if r else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v) or v < 0:
        return None
    return float(v)

def server_of(r):
    s = str(r.get("server") or OURS).lower()
    return PEER if s.startswith("parse") else (OURS if s.startswith("livequeryd") else s)

first = {}          # (id, server) -> first ok record
order = []
with open(results, encoding="utf-8", errors="replace") as f:
    for n, line in enumerate(f, 1):
        line = line.strip()
        if not line:
            continue
        try:
            r = json.loads(line)
        except ValueError:
            warn("line {}: not JSON, ignored".format(n))
            continue
        if not isinstance(r, dict) or not r.get("id"):
            continue
        key = (r["id"], server_of(r))
        if r.get("ok") is not True:
            warn("{} / {}: failed run ({}), not plotted".format(key[0], key[1], r.get("failure") or "no reason"))
            continue
        if key not in first:
            first[key] = r
            order.append(r["id"])

def rec(rid, srv):
    return first.get((rid, srv))

def idle_ids():
    return [i for i in dict.fromkeys(order) if i.startswith("idle") or
            any((r or {}).get("scenario") == "idle" for r in (rec(i, OURS), rec(i, PEER)))]

def si(v):
    """Short human figure: 300k, 16.1k, 1.2M, 52.3, 4.07."""
    if v is None:
        return ""
    for div_, suf in ((1e6, "M"), (1e3, "k")):
        if v >= div_:
            x = v / div_
            t = ("{:.0f}" if x >= 100 else "{:.1f}" if x >= 10 else "{:.2f}").format(x)
            if "." in t:
                t = t.rstrip("0").rstrip(".")
            return t + suf
    if v >= 100:
        return "{:.0f}".format(v)
    if v >= 10:
        return "{:.1f}".format(v)
    return "{:.2f}".format(v)

def q(s):
    # double-quoted gnuplot string: a backslash-n in s is a line break there
    return '"' + str(s).replace('"', "'") + '"'

def cell(v):
    return "?" if v is None else repr(float(v))

def log_range(vals, lo_pad=0.5, hi_pad=3.0):
    vals = [v for v in vals if v is not None and v > 0]
    lo = 10 ** math.floor(math.log10(min(vals) * lo_pad))
    hi = 10 ** math.ceil(math.log10(max(vals) * hi_pad))
    return lo, hi

def header(name, title, subtitle, width=800, height=500, bmargin=5):
    where_txt = ("\\nmeasured on " + where) if where else ""
    return "\n".join([
        "set terminal {} size {},{} font {}".format(terminal, width, height, q("sans,10") if terminal == "pngcairo" else q("")),
        "set termoption noenhanced",
        "set output {}".format(q(os.path.join(outdir, name + ".png"))),
        "set datafile separator '\\t'",
        "set datafile missing '?'",
        "set title {} font {}".format(q(title + "\\n" + subtitle + where_txt), q(",11")),
        "set grid ytics mytics lc rgb '#dddddd'",
        "set key at screen 0.5, screen 0.01 center bottom horizontal samplen 2 width 2",
        "set bmargin {}".format(bmargin),
        "set border 3",
        "set tics nomirror",
    ]) + "\n"

def write(name, dat, gp):
    for fname, text in dat.items():
        with open(os.path.join(tmp, fname), "w") as f:
            f.write(text)
    with open(os.path.join(tmp, name + ".gp"), "w") as f:
        f.write(gp)

def ticks(xs, fmt=si):
    return "set xtics (" + ", ".join("{} {}".format(q(fmt(x)), repr(x)) for x in sorted(set(xs))) + ")"

def bars(name, rows, title, subtitle, ylabel, width=800, height=500, yfmt="%g", bmargin=4):
    """Clustered bars, log y: rows = [(xlabel, ours, peer[, second xlabel line])]; None = gap."""
    vals = [v for r in rows if r for v in r[1:3] if v]
    lo, hi = log_range(vals, 0.3, 4.0)
    lines = []
    for r in rows:
        if r is None:
            lines.append("-\t?\t?\t-\t-\t-")
        else:
            # no empty field: gnuplot 5.4's strcol() returns stale text for an empty last field
            lines.append("{}\t{}\t{}\t{}\t{}\t{}".format(r[0], cell(r[1]), cell(r[2]), si(r[1]) or "-",
                                                      si(r[2]) or "-", (r[3] if len(r) > 3 else "") or "-"))
    have_peer = any(r and r[2] for r in rows)
    have_ours = any(r and r[1] for r in rows)
    gp = header(name, title, subtitle, width, height, bmargin) + "\n".join([
        "set style data histograms",
        "set style histogram clustered gap 1",
        "set style fill solid 0.85 border rgb '#333333'",
        "set logscale y",
        "set yrange [{}:{}]".format(lo, hi),
        "set format y {}".format(q(yfmt)),
        "set ylabel {}".format(q(ylabel)),
        "set xtics scale 0",
        "set grid noxtics",
        "set xrange [-0.6:{}]".format(len(rows) - 0.4),
    ]) + "\n"
    # in a 2-column cluster with gap 1, bar j of row i is centred at i + (j - 0.5) / 3
    xtic = 'xtic((strcol(1) eq "-" ? "" : strcol(1)) . (strcol(6) eq "-" ? "" : "\\n" . strcol(6)))'
    parts = ["'{}.dat' using ($2>0 ? $2 : 1/0):{} title {} lc rgb {}".format(
        name, xtic, q(NAMES[OURS] if have_ours else NAMES[OURS] + " (not measured)"), q(COLORS[OURS])),
             "'' using ($3>0 ? $3 : 1/0) title {} lc rgb {}".format(
        q(NAMES[PEER] if have_peer else NAMES[PEER] + " (not measured)"), q(COLORS[PEER])),
             "'' using ($0-1.0/6):($2*1.12):4 with labels center offset 0,0.5 font ',9' notitle",
             "'' using ($0+1.0/6):($3*1.12):5 with labels center offset 0,0.5 font ',9' notitle"]
    gp += "plot " + ", \\\n     ".join(parts) + "\n"
    write(name, {name + ".dat": "\n".join(lines) + "\n"}, gp)

def series_lines(prefix, series, lo, hi, logy):
    """.dat files and plot clauses for {server: [(x, y, label)]}: a line per server, each point
    labelled above it when it is the higher of the two servers at that x, else below it."""
    dat, parts = {}, []
    at = {srv: {x: y for x, y, _ in pts} for srv, pts in series.items()}
    step = (hi / lo) ** 0.05 if logy else 0.05 * (hi - lo)
    for srv in (OURS, PEER):
        pts = sorted(series.get(srv, []))
        if not pts:
            continue
        other = PEER if srv == OURS else OURS
        rows = []
        for x, y, lab in pts:
            o = at.get(other, {}).get(x)
            above = o is None or y > o or (y == o and srv == OURS)
            ly = (y * step if above else y / step) if logy else (y + step if above else y - step)
            rows.append("{}\t{}\t{}\t{}\n".format(repr(x), repr(y), lab or "-", repr(ly)))
        fname = "{}-{}.dat".format(prefix, srv)
        dat[fname] = "".join(rows)
        parts.append("'{}' using 1:2 with linespoints lw 2 pt {} ps 1.4 lc rgb {} title {}".format(
            fname, PTS[srv], q(COLORS[srv]), q(NAMES[srv])))
        parts.append("'' using 1:4:3 with labels font ',9' tc rgb {} notitle".format(q(COLORS[srv])))
    return dat, parts

def lines_plot(name, series, title, subtitle, xlabel, ylabel, logx=True, logy=True, extra="", xfmt=si):
    """series: {server: [(x, y, label)]}; one line per server."""
    xs = [p[0] for s in series.values() for p in s]
    ys = [p[1] for s in series.values() for p in s]
    lo, hi = log_range(ys, 0.3, 3.0) if logy else (0, max(ys) * 1.3)
    dat, parts = series_lines(name, series, lo, hi, logy)
    gp = header(name, title, subtitle) + "\n".join([
        "set logscale x" if logx else "",
        "set logscale y" if logy else "",
        "set xrange [{}:{}]".format(min(xs) / 1.6, max(xs) * 1.6) if logx else "",
        "set yrange [{}:{}]".format(lo, hi),
        ticks(xs, xfmt),
        "set format y '%g'",
        "set xlabel {}".format(q(xlabel)),
        "set ylabel {}".format(q(ylabel)),
        extra,
    ]) + "\n"
    gp += "plot " + ", \\\n     ".join(parts) + "\n"
    write(name, dat, gp)

made = []

# ---- deliveries.png
rows = []
for rid, n in (("b1k", 1000), ("b10k", 10000)):
    o, p = num(rec(rid, OURS), "deliveries_per_s"), num(rec(rid, PEER), "deliveries_per_s")
    if o is None and p is None:
        continue
    conns = num(rec(rid, OURS) or rec(rid, PEER), "connections") or n
    rows.append(("{} subscribers ({})".format("{:,.0f}".format(conns), rid), o, p))
if rows:
    bars("deliveries", rows, "Broadcast throughput at full speed (higher is better)",
         "deliveries/s received by lq_bench, 1 subscription per connection, every event matches all",
         "deliveries/s (log scale)", yfmt="%.0s%c")
    made.append("deliveries")
else:
    warn("deliveries.png skipped: no successful b1k / b10k record")

# ---- latency.png
rows = []
NICE = {"b1k-15k": "1k subscribers, 15k deliveries/s", "b10k-15k": "10k subscribers, 15k deliveries/s",
        "b1k-burst": "1k subscribers, bursts"}
for rid in ("b1k-15k", "b10k-15k", "b1k-burst"):
    o, p = rec(rid, OURS), rec(rid, PEER)
    if not any(num(r, k) is not None for r in (o, p) for k in ("lat_p50_ms", "lat_p99_ms", "lat_p999_ms")):
        continue
    nice = NICE[rid]
    r0 = o or p
    if rid == "b1k-burst" and num(r0, "burst") is not None:
        nice = "1k subscribers, bursts of {:.0f}".format(num(r0, "burst"))
        if num(r0, "burst_interval_ms") is not None:
            nice += " / {:.0f} ms".format(num(r0, "burst_interval_ms"))
    if rows:
        rows.append(None)
    for k, lab in (("lat_p50_ms", "p50"), ("lat_p99_ms", "p99"), ("lat_p999_ms", "p99.9")):
        rows.append((lab, num(o, k), num(p, k), nice if lab == "p99" else ""))
if rows:
    bars("latency", rows, "Delivery latency at fixed publish rates (lower is better)",
         "publish to receipt at lq_bench, percentiles per scenario", "latency (ms, log scale)",
         width=900, height=520, bmargin=5)
    made.append("latency")
else:
    warn("latency.png skipped: no successful b1k-15k / b10k-15k / b1k-burst record with latency")

# ---- selective.png
series = {}
for srv in (OURS, PEER):
    for rid in ("s1k", "s10k", "s100k"):
        r = rec(rid, srv)
        v, subs = num(r, "cpu_us_per_delivery"), num(r, "subscriptions")
        if v is not None and subs:
            series.setdefault(srv, []).append((subs, v, si(v) + " µs"))
if series:
    lines_plot("selective", series, "Selective: server CPU per event against distinct subscriptions (lower is better)",
               "each event matches one subscription; 1,000 connections; server user+sys CPU / events",
               "distinct subscriptions (log scale)", "server CPU µs per event (log scale)")
    made.append("selective")
else:
    warn("selective.png skipped: no successful s1k / s10k / s100k record with cpu_us_per_delivery")

# ---- connect.png
def conn_points(srv, value):
    pts = {}
    for rid in ["b1k", "b10k"] + idle_ids():
        r = rec(rid, srv)
        n = num(r, "connections")
        v = value(r)
        if n and v is not None:
            pts.setdefault(n, (n, v[0], v[1]))   # first at each connection count: b1k/b10k, then idle
    return list(pts.values())

def connect_value(r):
    s, n = num(r, "connect_subscribe_s"), num(r, "connections")
    if not s or not n:
        return None
    return s, "{} s, {}/s".format(si(s), si(n / s))

series = {srv: conn_points(srv, connect_value) for srv in (OURS, PEER)}
series = {k: v for k, v in series.items() if v}
if series:
    lines_plot("connect", series, "Connect storm: time to connect and subscribe N connections (lower is better)",
               "1 subscription per connection, all opened at once; labels: time, connections/s",
               "connections (log scale)", "connect + subscribe time (s, log scale)")
    made.append("connect")
else:
    warn("connect.png skipped: no successful b1k / b10k / idle record with connect_subscribe_s")

# ---- memory.png (two panels)
def mem_points(srv):
    per, tot = {}, {}
    for rid in idle_ids() + ["b1k", "b10k"]:        # idle first: preferred at equal connections
        r = rec(rid, srv)
        n = num(r, "connections")
        if not n:
            continue
        pc, ra = num(r, "rss_per_conn_bytes"), num(r, "server_rss_after_sub_kb")
        if pc is not None and pc > 0:
            per.setdefault(n, (n, pc / 1024, "{} KB ({})".format(si(pc / 1024), rid)))
        if ra is not None and ra > 0:
            tot.setdefault(n, (n, ra / 1024, "{} MB".format(si(ra / 1024))))
    return list(per.values()), list(tot.values())

mem = {srv: mem_points(srv) for srv in (OURS, PEER)}
if any(mem[s][0] or mem[s][1] for s in mem):
    per = {srv: mem[srv][0] for srv in mem if mem[srv][0]}
    tot = {srv: mem[srv][1] for srv in mem if mem[srv][1]}
    xs = [p[0] for d_ in (per, tot) for pts in d_.values() for p in pts]
    y1 = [p[1] for pts in per.values() for p in pts]
    y2 = [p[1] for pts in tot.values() for p in pts]
    dat, p1, p2 = {}, [], []
    if per:
        hi1 = max(y1 + [3.0]) * 1.8   # the top 40 % is left free for the legend
        d1, p1 = series_lines("memory-per", per, 0, hi1, False)
        dat.update(d1)
    if tot:
        lo2, hi2 = log_range(y2, 0.3, 3.0)
        d2, p2 = series_lines("memory-tot", tot, lo2, hi2, True)
        dat.update(d2)
    if tot and not per:
        hi2 *= 10   # this panel carries the legend: room for it at the top
    where_txt = ("\\nmeasured on " + where) if where else ""
    panels = int(bool(per)) + int(bool(tot))
    gp = "\n".join([
        "set terminal {} size {},500 font {}".format(terminal, 1000 if panels == 2 else 800,
                                                   q("sans,10") if terminal == "pngcairo" else q("")),
        "set termoption noenhanced",
        "set output {}".format(q(os.path.join(outdir, "memory.png"))),
        "set datafile separator '\\t'",
        "set grid ytics lc rgb '#dddddd'",
        "set key inside top left vertical samplen 2 spacing 1.1 box lc rgb '#bbbbbb'",
        "set border 3", "set tics nomirror",
        "set logscale x", "set xrange [{}:{}]".format(min(xs) / 1.6, max(xs) * 1.6), ticks(xs),
        "set xlabel 'connections (1 subscription each; log scale)'",
        "set multiplot layout 1,{} title {} font ',11'".format(panels, q(
            "Server memory (RSS) against connections (lower is better)\\n"
            "measured after every connection subscribed, before any event (b1k, b10k, idle runs)" + where_txt)),
    ]) + "\n"
    if per:
        gp += "\n".join([
            "set title 'RSS per connection (KB)'",
            "set ylabel 'KB per connection'", "set yrange [0:{}]".format(hi1),
        ]) + "\nplot " + ", \\\n     ".join(p1 + ["3 with lines dt 2 lw 1.5 lc rgb '#2ca02c' title 'target 3 KB'"]) + "\n"
        gp += "unset key\n"   # one legend, in the first panel
    if tot:
        gp += "\n".join([
            "set title 'RSS after subscribe (MB)'",
            "set ylabel 'MB (log scale)'", "set logscale y", "set yrange [{}:{}]".format(lo2, hi2), "set format y '%g'",
        ]) + "\nplot " + ", \\\n     ".join(p2) + "\n"
    gp += "unset multiplot\n"
    write("memory", dat, gp)
    made.append("memory")
else:
    warn("memory.png skipped: no successful b1k / b10k / idle record with RSS figures")

with open(os.path.join(tmp, "plots"), "w") as f:
    f.write("\n".join(made) + ("\n" if made else ""))
PY

rc=0
while read -r name; do
    [ -n "$name" ] || continue
    if (cd "$TMP" && gnuplot "$name.gp") 2>"$TMP/$name.err"; then
        echo "$OUTDIR/$name.png"
        # gnuplot's warnings (e.g. a series with no point) are worth seeing
        # (a server absent from a bar chart is expected: its "no valid points" warning is not)
        grep -v 'Skipping data file with no valid points' "$TMP/$name.err" | sed "s/^/plot.sh: $name: /" >&2 || true
    else
        echo "plot.sh: gnuplot failed on $name:" >&2
        cat "$TMP/$name.err" >&2
        rc=1
    fi
done <"$TMP/plots"
exit $rc
