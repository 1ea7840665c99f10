"""Run the pyperf benchmarks and write bench/RESULTS.md from their JSON.

    python bench/run_all.py [pyperf options]      # what `make bench` runs

Every figure in RESULTS.md is read from the JSON files in bench/ (clock, heap,
bus, arrays, latency, redis), which this script rewrites on each run.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyperf

BENCH = Path(__file__).resolve().parent
SCRIPTS = {"clock": "bench_clock.py", "heap": "bench_heap.py", "bus": "bench_bus.py",
           "arrays": "bench_arrays.py"}
LATENCY_SCRIPT = "bench_latency.py"  # not pyperf: a paced run and a tracemalloc reading
REDIS_SCRIPT = "bench_redis.py"  # not pyperf: two processes around a throwaway redis-server
REDIS_RATIO = 0.5  # hlcbus's events/s across Redis over the bare redis-py loop's, at least
# --fast (10 worker processes x 2 values per benchmark) runs the 29 benchmarks
# in 3.5 minutes on the 2-core reference machine.  pyperf's default rigour
# (20 x 3) would take about 8: every value costs ~0.13 s and every worker a
# process start-up, so the time scales with processes x values.  Between --fast
# runs here the medians moved by 2-5% on a quiet machine, by up to 20% while
# other jobs shared the CPUs (hence the load line in RESULTS.md).  Options
# given on the command line (e.g. --rigorous) replace these.
DEFAULT_OPTIONS = ["--fast"]
# pyperf runs one worker at a time, which alone makes a load of about 1.
BUSY_LOAD = 1.5
FLOOR = "floor time.time_ns"
PUSH_POP = "PriorityBuffer push+pop"
BASELINES = ("heapq tuples push+pop", "heapq packed ints push+pop")
# (what is compared, numerator, denominator, "<=" or ">=", bound)
TARGETS = (
    ("`c now` / `floor time.time_ns`", "c now", FLOOR, "<=", 1.5),
    ("`c update` / `c now`", "c update", "c now", "<=", 1.3),
    (f"`heapq tuples push+pop` / `c {PUSH_POP}` (speed-up)", BASELINES[0], f"c {PUSH_POP}",
     ">=", 4.0),
    (f"`heapq packed ints push+pop` / `c {PUSH_POP}` (speed-up)", BASELINES[1],
     f"c {PUSH_POP}", ">=", 2.0),
    ("`pyee emit 1` / `hlcbus publish 1` (speed-up)", "pyee emit 1", "hlcbus publish 1",
     ">=", 1.0),
    ("`psygnal emit 10` / `hlcbus publish 10` (speed-up)", "psygnal emit 10",
     "hlcbus publish 10", ">=", 1.0),
    ("`straw man end-to-end 1 publisher` / `hlcbus end-to-end 1 publisher ordered` (speed-up)",
     "straw man end-to-end 1 publisher", "hlcbus end-to-end 1 publisher ordered", ">=", 5.0),
    ("ordered / unordered throughput, 1 publisher", "hlcbus end-to-end 1 publisher unordered",
     "hlcbus end-to-end 1 publisher ordered", ">=", 0.85),
)
# (what is compared, benchmark, "<=" or ">=", bound, unit): absolute figures
ABSOLUTE_TARGETS = (
    ("publish cost, 1 subscriber", "hlcbus publish 1", "<=", 0.5e-6, "us"),
    ("publish cost, 10 subscribers", "hlcbus publish 10", "<=", 1.5e-6, "us"),
    ("end to end, 1 publisher, ordered", "hlcbus end-to-end 1 publisher ordered", ">=",
     1_000_000, "events/s"),
    ("end to end, 4 publishers, ordered", "hlcbus end-to-end 4 publisher ordered", ">=",
     700_000, "events/s"),
    *((f"arrays {op}", f"arrays {op}", ">=", 50_000_000, "timestamps/s")
      for op in ("pack", "unpack", "encode", "decode")),
    ("HLC.now_many", "c now_many", ">=", 100_000_000, "timestamps/s"),
)
ARRAY_IMPLS = ("arrays", "c", "py", "numpy", "scalar")


def run(options):
    if shutil.which("redis-server") is None:  # needed last: say so before 13 minutes of work
        sys.exit("bench/run_all.py needs redis-server (Debian: apt-get install redis-server)")
    suites = {}
    for area, script in SCRIPTS.items():
        output = BENCH / f"{area}.json"
        output.unlink(missing_ok=True)  # pyperf refuses to overwrite
        subprocess.run([sys.executable, str(BENCH / script), *options, "-o", str(output)],
                       check=True)
        suites[area] = pyperf.BenchmarkSuite.load(str(output))
    output = BENCH / "latency.json"
    subprocess.run([sys.executable, str(BENCH / LATENCY_SCRIPT), "-o", str(output)], check=True,
                   stdout=subprocess.DEVNULL)
    extra = json.loads(output.read_text())
    output = BENCH / "redis.json"
    subprocess.run([sys.executable, str(BENCH / REDIS_SCRIPT), "-o", str(output)], check=True,
                   stdout=subprocess.DEVNULL)
    extra["redis"] = json.loads(output.read_text())
    return suites, extra


def ns(seconds):
    value = seconds * 1e9
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def ratio(value):
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def clock_table(benchmarks, median):
    rows = []
    for name, bench in benchmarks.items():
        operation = name.partition(" ")[2]
        versus_c = "" if name == FLOOR else ratio(median[name] / median[f"c {operation}"])
        rows.append([f"`{name}`", ns(median[name]), ns(bench.stdev()),
                     ratio(median[name] / median[FLOOR]), versus_c])
    return table(["benchmark", "median ns", "stdev ns", "/ time.time_ns", "/ c"], rows)


def heap_tables(benchmarks, median, batch):
    push_pop, pop_until = [], []
    for name, bench in benchmarks.items():
        if name.endswith("push+pop"):
            push_pop.append([f"`{name}`", ns(median[name]), ns(bench.stdev())]
                            + [ratio(median[name] / median[base]) for base in BASELINES])
        else:
            c_name = "c " + name.split(" ", 1)[1]
            pop_until.append([f"`{name}`", ns(median[name]), ns(bench.stdev()),
                              ns(median[name] / batch), ratio(median[name] / median[c_name])])
    return (table(["benchmark", "median ns", "stdev ns", "/ heapq tuples",
                   "/ heapq packed ints"], push_pop),
            table(["benchmark", "median ns per call", "stdev ns", "ns per entry", "/ c"],
                  pop_until))


def _verdict(value, op, bound):
    return "met" if (value <= bound if op == "<=" else value >= bound) else "MISSED"


def target_lines(median, extra):
    lines = []
    for label, numerator, denominator, op, bound in TARGETS:
        value = median[numerator] / median[denominator]
        # Three decimals, so a ratio just short of its bound never reads as equal to it.
        lines.append(f"- {_verdict(value, op, bound)}: {label} = {value:.3f}x "
                     f"(target {op} {bound:g}x)")
    for label, name, op, bound, unit in ABSOLUTE_TARGETS:
        value = median[name] if unit == "us" else 1 / median[name]
        shown = f"{value * 1e6:.3f} us" if unit == "us" else f"{value:,.0f} {unit}"
        limit = f"{bound * 1e6:g} us" if unit == "us" else f"{bound:,} {unit}"
        lines.append(f"- {_verdict(value, op, bound)}: {label} = {shown} (target {op} {limit})")
    latency = extra["latency"]
    for label, key, bound in (("ordered latency p99, window_ms=100", "ordered window_ms=100",
                               105.0),
                              ("ordered latency p99, window_ms=0", "ordered window_ms=0", 1.0)):
        value = latency[key]["p99_ms"]
        lines.append(f"- {_verdict(value, '<=', bound)}: {label} = {value:.3f} ms "
                     f"(target <= {bound:g} ms)")
    per_event = extra["memory"]["bytes_per_event"]
    lines.append(f"- {_verdict(per_event, '<=', 300)}: memory per buffered event = "
                 f"{per_event:.0f} bytes (target <= 300)")
    value = extra["redis"]["ratio"]
    lines.append(f"- {_verdict(value, '>=', REDIS_RATIO)}: hlcbus / bare redis-py throughput "
                 f"across processes = {value:.3f}x (target >= {REDIS_RATIO:g}x)")
    return lines


def bus_tables(benchmarks, median):
    publish, end_to_end, fifo = [], [], []
    for name, bench in benchmarks.items():
        if "end-to-end" in name:
            end_to_end.append([f"`{name}`", ns(median[name]), ns(bench.stdev()),
                               f"{1 / median[name]:,.0f}"])
        elif "put" in name or name.startswith("telemetry"):
            fifo.append([f"`{name}`", ns(median[name]), ns(bench.stdev())])
        else:
            count = name.split()[-1] if not name.endswith("ordered") else name.split()[-2]
            base = f"hlcbus publish {count}"
            publish.append([f"`{name}`", ns(median[name]), ns(bench.stdev()),
                            ratio(median[name] / median[base])])
    return (table(["benchmark", "median ns", "stdev ns", "/ hlcbus publish"], publish),
            table(["benchmark", "median ns per event", "stdev ns", "events/s"], end_to_end),
            table(["benchmark", "median ns", "stdev ns"], fifo))


def arrays_table(benchmarks):
    """One row per operation, one column per implementation: ns per timestamp."""
    # This suite's medians only: the clock suite has a "c parse" of its own.
    median = {name: bench.median() for name, bench in benchmarks.items()}
    operations = list(dict.fromkeys(name.split(" ", 1)[1] for name in benchmarks))
    rows = []
    for operation in operations:
        cells = {impl: median.get(f"{impl} {operation}") for impl in ARRAY_IMPLS}
        ours = cells["arrays"] or cells["c"]
        row = [f"`{operation}`"] + ["" if cells[i] is None else ns(cells[i]) for i in ARRAY_IMPLS]
        row += ["" if cells[base] is None or ours is None else ratio(cells[base] / ours)
                for base in ("numpy", "scalar")]
        rows.append(row)
    return table(["operation", "hlcbus.arrays", "c core", "py core", "plain numpy",
                  "scalar loop", "numpy / ours", "scalar / ours"], rows)


def latency_table(extra):
    rows = [[f"`{name}`", f"{row['p50_ms']:.3f}", f"{row['p99_ms']:.3f}", f"{row['max_ms']:.3f}",
             f"{row['events']:,}"] for name, row in extra["latency"].items()]
    return table(["subscription", "p50 ms", "p99 ms", "max ms", "events"], rows)


def redis_lines(redis):
    """The cross-process section: saturated throughput, then paced latency, per case."""
    window, rows = redis["window_ms"], []
    for case, label in (("bare", "bare redis-py"), ("hlcbus", "hlcbus RedisBridge")):
        saturated, paced = redis["saturated"][case], redis["paced"][case]
        rows.append([label, f"{saturated['events_per_s']:,.0f}",
                     ", ".join(f"{value:,}" for value in saturated["runs_events_per_s"]),
                     f"{paced['p50_ms']:.3f}", f"{paced['p99_ms']:.3f}",
                     f"{paced['max_ms']:.3f}"])
    hlc = redis["paced"]["hlcbus"]
    load = redis["load_avg_1min"]
    return [
        "Two processes, a publisher and a consumer, through one local redis-server "
        f"{redis['redis_server']}",
        f"(redis-py {redis['redis_py']}, {redis['parser']} parser; `bench/bench_redis.py`). "
        "hlcbus: `EventBus` +",
        "`RedisBridge` on each side, the consumer's handler on an ordered subscription with",
        f"`window_ms={window}`. Bare: redis-py alone, pipelines of {redis['batch_size']} XADDs "
        f"and XREADGROUP (COUNT {redis['batch_size']})",
        "/ json.loads / XACK, with the same entry fields and payloads: the ceiling. Events/s:",
        f"the median of {redis['repeats']} alternating runs of {redis['events']:,} events "
        "published at once, first publish to",
        "last delivery. Latency: publish to handler, in a run paced at "
        f"{redis['rate_per_s']:,} events/s for {redis['paced_seconds']:g} s",
        "(at saturation, latency is only the queue).",
        "",
        *table(["case", "events/s", "runs", "p50 ms", "p99 ms", "max ms"], rows),
        "",
        f"hlcbus / bare throughput: {redis['ratio']:.3f}x. hlcbus latency minus the window: "
        f"p50 {hlc['p50_ms'] - window:.3f} ms,",
        f"p99 {hlc['p99_ms'] - window:.3f} ms. 1-minute load average during these runs: "
        f"{load['min']:.2f} to {load['max']:.2f} ({redis['cpus']} CPUs,",
        "shared by the three processes).",
    ]


def source_revision():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=BENCH,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def machine_lines(suites, options):
    meta = {}
    for suite in suites.values():
        meta.update(suite.get_metadata())
    benches = [bench for suite in suites.values() for bench in suite.get_benchmarks()]
    starts = [bench.get_dates()[0] for bench in benches]
    ends = [bench.get_dates()[1] for bench in benches]
    loads = [run.get_metadata()["load_avg_1min"] for bench in benches
             for run in bench.get_runs() if "load_avg_1min" in run.get_metadata()]
    # Calibration runs carry no values: count the worker processes that measured.
    runs = {(sum(1 for run in bench.get_runs() if run.values), len(bench.get_values()))
            for bench in benches}
    versions = (f"hlcbus {meta['hlcbus_version']} ({meta.get('hlcbus_core', 'c')} core, "
                f"tree {source_revision()}), "
                f"hlcpy {meta['hlcpy_version']}, accordsync-core {meta['accordsync_version']}, "
                f"pyee {meta['pyee_version']}, blinker {meta['blinker_version']}, "
                f"psygnal {meta['psygnal_version']}, numpy {meta['numpy_version']}, "
                f"pyperf {meta['perf_version']}")
    lines = [
        f"- Python: {meta['python_implementation']} {meta['python_version']}",
        f"- Platform: {meta['platform']}",
        f"- CPU: {meta.get('cpu_model_name', 'unknown')}, {meta['cpu_count']} CPUs",
        f"- Date: {min(starts):%Y-%m-%d %H:%M} to {max(ends):%H:%M} ({time.strftime('%Z')})",
        f"- Versions: {versions}",
        f"- pyperf options: `{' '.join(options)}`; values per benchmark: "
        + ", ".join(f"{v} (from {p} worker processes)" for p, v in sorted(runs)),
    ]
    if loads:
        lines.append(f"- 1-minute load average during the runs: {min(loads):.2f} to "
                     f"{max(loads):.2f}")
    if loads and max(loads) > BUSY_LOAD:
        lines.append(f"- The load went above {BUSY_LOAD}: other work shared the CPUs, so some"
                     " medians may be inflated and ratios off by several percent.")
    return lines


def render(suites, extra, options):
    clock = {b.get_name(): b for b in suites["clock"].get_benchmarks()}
    heap = {b.get_name(): b for b in suites["heap"].get_benchmarks()}
    bus = {b.get_name(): b for b in suites["bus"].get_benchmarks()}
    arrays = {b.get_name(): b for b in suites["arrays"].get_benchmarks()}
    median = {name: bench.median()
              for name, bench in {**clock, **heap, **bus, **arrays}.items()}
    publish, end_to_end, fifo = bus_tables(bus, median)
    entries = suites["heap"].get_metadata()["heap_entries"]
    batch = suites["heap"].get_metadata()["released_per_call"]
    push_pop, pop_until = heap_tables(heap, median, batch)
    return "\n".join([
        "# hlcbus benchmarks",
        "",
        "Written by `bench/run_all.py` from pyperf's JSON; do not edit by hand.",
        "Reproduce with `make bench`. Times are medians per operation, in nanoseconds;",
        "a ratio is this row's median divided by the column's.",
        "",
        "## Machine",
        "",
        *machine_lines(suites, options),
        "",
        "## Clock",
        "",
        "`now`: one timestamp from the system clock (hlcpy: `sync()`, which ticks the clock in",
        "place and returns nothing; accordsync: read the wall clock, then `tick()`). `update`:",
        "merge a recent timestamp from another node. accordsync has only a text encoding",
        "(`encode`/`decode`), measured as `str`/`parse`.",
        "",
        *clock_table(clock, median),
        "",
        "## Heap",
        "",
        f"push+pop at a steady {entries:,} entries: push one key, pop the min. Keys drift",
        "forward with jitter (see `bench/bench_heap.py`) and are built before timing. heapq",
        "tuples builds each (physical, logical, node, seq, item) entry in the loop, as a buffer",
        "on heapq must; the packed ints carry no seq and no item.",
        "",
        *push_pop,
        "",
        f"pop_until releasing {batch} entries per call, the heap refilled to {entries:,}",
        "between calls (untimed):",
        "",
        *pop_until,
        "",
        "## Bus",
        "",
        "Publish cost on the publisher's thread (its CPU time, `time.thread_time`: hlcbus's",
        "workers run concurrently) with 1 or 10 trivial subscribers; pyee, blinker and psygnal",
        "call their handlers synchronously, so theirs is the whole emit.",
        "",
        *publish,
        "",
        "End to end: wall time per event from the first publish to the last delivery, one",
        "subscriber with a trivial handler, `window_ms=0`. The straw man is hlcpy +",
        "queue.Queue + heapq.",
        "",
        *end_to_end,
        "",
        "For scale: the FIFOs of the card (hlcbus uses a deque and a lock as a semaphore),",
        "and `telemetry.execute` with no handler attached (the publish path never calls it;",
        "the bus emits only on rare paths and once per stats interval):",
        "",
        *fifo,
        "",
        f"Delivery latency, {extra['rate_per_s']:,} events/s from one publisher, publish to",
        "handler (`bench/bench_latency.py`):",
        "",
        *latency_table(extra),
        "",
        f"Memory: {extra['memory']['events']:,} events buffered in one ordered subscription",
        f"cost {extra['memory']['bytes_per_event']:.0f} bytes each beyond their payload",
        "(tracemalloc, which sees the C arrays: the core allocates them with PyMem).",
        "",
        "## Arrays",
        "",
        f"`hlcbus.arrays` on {suites['arrays'].get_metadata()['rows']:,}-row columns, input",
        "checks included; the `now_many` row is `HLC.now_many` on each core. Plain numpy is",
        "the obvious numpy code for the same result with no checks; the scalar loop calls the",
        "compiled `Timestamp` per row on a shorter column. Median ns per timestamp",
        "(`bench/bench_arrays.py`):",
        "",
        *arrays_table(arrays),
        "",
        "## Across processes (Redis)",
        "",
        *redis_lines(extra["redis"]),
        "",
        "## Targets",
        "",
        *target_lines(median, extra),
        "",
    ])


README = BENCH.parent / "README.md"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(results):
    """Replace the README's marked performance section with this run's targets."""
    text = README.read_text()
    start, end = text.index(README_START), text.index(README_END)
    targets = results[results.index("## Targets"):].splitlines()[2:]
    machine = [line for line in results.splitlines() if line.startswith(("- Date", "- CPU"))]
    body = ["", "From the last `make bench` (full tables in `bench/RESULTS.md`):", "",
            *machine, "", *[line for line in targets if line], ""]
    README.write_text(text[:start + len(README_START)] + "\n".join(body) + text[end:])


def main():
    options = sys.argv[1:] or DEFAULT_OPTIONS
    suites, extra = run(options)
    results = render(suites, extra, options)
    (BENCH / "RESULTS.md").write_text(results)
    update_readme(results)
    print(f"wrote {BENCH / 'RESULTS.md'} and the performance section of {README}")


if __name__ == "__main__":
    main()
