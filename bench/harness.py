"""What every side-by-side benchmark needs: a throwaway seeded PostGIS, a real server
in its own process, timed calls with the CPU each process spent, and markdown tables.

A benchmark here compares a *line* (requests to a server over real HTTP) with a
*reference* measured in the same run on the same machine (the same SQL sent straight
from psycopg, a peer server, the bare read).  The ratio, server time over reference
time per item, is the number worth recording: absolute rates move with the machine,
ratios much less.  The CPU that the client, the server and PostgreSQL spent on each
item says where the time goes.

Nothing runs at import: clusters, servers and clients are context managers.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np
from tqdm import tqdm

from layers import db
from layers.cluster import LocalCluster, free_port

ROOT = Path(__file__).resolve().parents[1]
DATABASE = "gridgov_bench"
ROLE = "gridgov"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")
R = TypeVar("R")
Probes = Mapping[str, Callable[[], float]]
"""Named clocks of cumulative CPU seconds (a process, a cluster) sampled around a run."""


class BenchError(Exception):
    """A benchmark could not run, or measured answers that disagree with the reference."""


def progress(desc: str, total: int | None = None, unit: str = "req") -> tqdm:
    """The progress bar every bench uses (stderr, so stdout keeps only the tables)."""
    return tqdm(desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True,
                mininterval=0.5)


# -- CPU clocks ----------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # the fields after "pid (comm) "


def process_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) used so far by process ``pid``; with ``children``,
    also by its children that have exited and been waited for."""
    f = _stat(pid)
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / CLOCK_TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its live children and the children it has reaped: the
    whole of a PostgreSQL cluster when ``pid`` is its postmaster."""
    total = process_cpu(pid, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = _stat(int(entry.name))
            if int(f[1]) == pid:
                total += (int(f[11]) + int(f[12])) / CLOCK_TICK
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return total


# -- set-up: a throwaway cluster with the demo town ------------------------------------


@dataclass(frozen=True)
class Database:
    """A seeded database; ``cluster`` is None when it is not the bench's own."""

    url: str
    cluster: LocalCluster | None = None

    def postgres_cpu(self) -> float:
        """CPU seconds the whole cluster has used (its postmaster and every backend)."""
        if self.cluster is None:
            raise BenchError("no CPU clock for a database the bench did not start")
        pid = int((self.cluster.datadir / "postmaster.pid").read_text().split()[0])
        return tree_cpu(pid)


@contextmanager
def seeded_database(seed: int = 2023, scale: int = 1) -> Iterator[Database]:
    """A fresh PostGIS cluster in ``.data/bench-pg-<pid>`` on a free port, migrated,
    seeded with the demo town, vacuumed and checkpointed (so no background work runs
    during the measurements); destroyed on exit.
    """
    from api.database import seed_town

    cluster = LocalCluster(datadir=ROOT / ".data" / f"bench-pg-{os.getpid()}", port=free_port())
    cluster.destroy()
    try:
        cluster.init()
        cluster.start()
        db.provision(cluster.url("postgres"), DATABASE, ROLE, cluster.password)
        url = cluster.url(DATABASE, user=ROLE)
        db.migrate(url)
        with progress("seeding the demo town", unit="step") as bar:

            def step(name: str, n: int) -> None:
                bar.set_postfix_str(f"{name}: {n:,}")
                bar.update(1)

            seed_town(url, seed=seed, scale=scale, progress=step)
        with db.connect(cluster.url(DATABASE), autocommit=True) as conn:
            conn.execute("VACUUM (FREEZE, ANALYZE)")
            conn.execute("CHECKPOINT")
        yield Database(url, cluster)
    finally:
        cluster.destroy()


# -- the server under test: uvicorn, one worker, its own process ----------------------


def gridgov_app(database_url: str) -> Any:
    """The gridgov ASGI app as ``gridgov serve`` builds it (called in the server process)."""
    from api.app import create_app
    from api.settings import Settings

    return create_app(Settings(env="test"), database_url)


def _serve_child(argv: Sequence[str]) -> None:
    """In the server process: ``module:function``, port, JSON list of arguments."""
    import importlib

    import uvicorn

    spec, port, args = argv
    module, _, name = spec.partition(":")
    factory = getattr(importlib.import_module(module), name)
    uvicorn.run(factory(*json.loads(args)), host="127.0.0.1", port=int(port), workers=1,
                log_level="warning", access_log=False)


_CHILD = "import sys; from bench.harness import _serve_child; _serve_child(sys.argv[1:])"


@dataclass(frozen=True)
class Server:
    """A server under test: where it answers, and its process."""

    url: str
    pid: int

    def cpu(self) -> float:
        """CPU seconds the server process has used."""
        return process_cpu(self.pid)


@contextmanager
def serve(
    factory: Callable[..., Any] | str,
    *args: Any,
    ready: str = "/readyz",
    timeout: float = 60.0,
) -> Iterator[Server]:
    """Run ``uvicorn`` with one worker on ``factory(*args)`` in a separate process on a
    free port (no access log); yields it once ``ready`` answers 200; stops it on exit.

    ``factory`` is a module-level function or its ``"module:function"`` name, and
    ``args`` are JSON values: the server process imports and calls it itself.  The
    server has its own process, so the client's Python never shares a GIL with it.
    """
    if not isinstance(factory, str):
        factory = f"{factory.__module__}:{factory.__qualname__}"
    port = free_port()
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-c", _CHILD, factory, str(port), json.dumps(args)]
    with launch(argv, port, ready=ready, timeout=timeout, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": path}) as server:
        yield server


@contextmanager
def launch(
    argv: Sequence[str],
    port: int,
    *,
    ready: str,
    timeout: float = 60.0,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[Server]:
    """Start the server process ``argv`` (which listens on 127.0.0.1:``port``), yield it
    once ``ready`` answers 200, stop it on exit.  With ``log``, its output goes to that
    file (whose end is quoted when it fails to start) instead of this process's."""
    out = log.open("ab") if log is not None else None
    proc = subprocess.Popen(list(argv), cwd=cwd, env=None if env is None else dict(env),
                            stdout=out, stderr=subprocess.STDOUT if out else None)
    server = Server(f"http://127.0.0.1:{port}", proc.pid)

    def failed(why: str) -> BenchError:
        tail = ""
        if log is not None and log.exists():
            tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        return BenchError(f"{why}{tail}")

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise failed(f"{argv[0]}: the server exited with code {proc.returncode} "
                             "at start-up")
            try:
                if httpx.get(server.url + ready, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise failed(f"the server did not answer {ready} within {timeout:.0f} s")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out is not None:
            out.close()


# -- clients -------------------------------------------------------------------------------

CLIENTS = ("httpx", "stdlib")
Get = Callable[[str], tuple[int, bytes]]
"""``get("/path?query")``: the status and body of one GET on a keep-alive connection."""


@contextmanager
def http_get(base: str, client: str = "httpx", timeout: float = 300.0) -> Iterator[Get]:
    """GET over one keep-alive HTTP/1.1 connection to ``base``, with httpx or with the
    standard library's ``http.client`` (several times lighter on the client's CPU, so
    more of the time measured is the server's)."""
    if client == "httpx":
        with httpx.Client(base_url=base, timeout=timeout) as c:

            def get(target: str) -> tuple[int, bytes]:
                r = c.get(target)
                return r.status_code, r.content

            yield get
    elif client == "stdlib":
        where = urlsplit(base)
        conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port,
                                          timeout=timeout)
        try:

            def get(target: str) -> tuple[int, bytes]:
                conn.request("GET", target)
                r = conn.getresponse()
                return r.status, r.read()

            yield get
        finally:
            conn.close()
    else:
        raise BenchError(f"unknown client {client!r}; use one of {', '.join(CLIENTS)}")


# -- measuring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Timed calls: ``wall`` seconds for all of them, each carrying ``per_call`` items,
    and the CPU seconds each probed process spent meanwhile (``client``: this one)."""

    wall: float
    latencies: tuple[float, ...]  # seconds, one per call
    per_call: int = 1
    concurrency: int = 1
    cpu: Mapping[str, float] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def items(self) -> int:
        return self.calls * self.per_call

    @property
    def rate(self) -> float:
        """Items per second over the wall time."""
        return self.items / self.wall

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))

    @classmethod
    def merge(cls, runs: Sequence[Run]) -> Run:
        """Several runs of the same calls (rounds) as one: walls and CPU add up."""
        first = runs[0]
        cpu: dict[str, float] = {}
        for r in runs:
            for k, v in r.cpu.items():
                cpu[k] = cpu.get(k, 0.0) + v
        return cls(sum(r.wall for r in runs), tuple(x for r in runs for x in r.latencies),
                   first.per_call, first.concurrency, cpu)

    def cpu_per_item(self, name: str) -> float | None:
        return self.cpu[name] / self.items if name in self.cpu else None

    def as_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "wall_s": self.wall, "calls": self.calls,
                "items": self.items, "concurrency": self.concurrency,
                "p50_s": self.percentile(50), "p99_s": self.percentile(99),
                "cpu_s": dict(self.cpu)}


class _Clocks:
    """CPU clocks read before and after a run."""

    def __init__(self, probes: Probes | None) -> None:
        self.probes = {"client": time.process_time, **(probes or {})}
        self.start = {k: f() for k, f in self.probes.items()}

    def spent(self) -> dict[str, float]:
        return {k: f() - self.start[k] for k, f in self.probes.items()}


def measure(
    call: Callable[[T], R], items: Sequence[T], desc: str = "", per_call: int = 1,
    warmup: Sequence[T] = (), probes: Probes | None = None,
) -> tuple[Run, list[R]]:
    """Call ``call`` on each item in turn, after one untimed call on each ``warmup``
    item; the timed run and the answers, in input order."""
    for item in warmup:
        call(item)
    answers: list[R] = []
    latencies: list[float] = []
    with progress(desc, total=len(items)) as bar:
        clocks = _Clocks(probes)
        t0 = time.perf_counter()
        for item in items:
            t = time.perf_counter()
            answers.append(call(item))
            latencies.append(time.perf_counter() - t)
            bar.update(1)
        wall = time.perf_counter() - t0
        cpu = clocks.spent()
    return Run(wall, tuple(latencies), per_call, cpu=cpu), answers


def measure_parallel(
    calls: Sequence[Callable[[T], R]], items: Sequence[T], desc: str = "",
    per_call: int = 1, warmup: Sequence[T] = (), probes: Probes | None = None,
) -> tuple[Run, list[R]]:
    """``len(calls)`` threads, each with its own ``call`` (its own connection, say),
    take the items from one queue until none are left; answers in input order.
    Each thread first makes one untimed call on each ``warmup`` item.  Clients that
    wait on sockets release the GIL, so the threads keep that many requests in flight.
    """
    answers: list[Any] = [None] * len(items)
    latencies = [0.0] * len(items)
    todo = iter(range(len(items)))
    lock = threading.Lock()
    start = threading.Barrier(len(calls) + 1)
    errors: list[BaseException] = []

    def next_index() -> int | None:
        with lock:
            return next(todo, None)

    def worker(call: Callable[[T], R], bar: tqdm) -> None:
        try:
            try:
                for item in warmup:
                    call(item)
            finally:
                start.wait()
            while (i := next_index()) is not None:
                t = time.perf_counter()
                answers[i] = call(items[i])
                latencies[i] = time.perf_counter() - t
                bar.update(1)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            with lock:
                for _ in todo:  # the others stop too
                    pass

    with progress(desc, total=len(items)) as bar:
        threads = [threading.Thread(target=worker, args=(c, bar), daemon=True) for c in calls]
        for t in threads:
            t.start()
        start.wait()
        clocks = _Clocks(probes)
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        cpu = clocks.spent()
    if errors:
        raise errors[0]
    return Run(wall, tuple(latencies), per_call, len(calls), cpu), answers


Measured = tuple[Run, list[R]]


def interleave(
    rounds: int, server: Callable[[int], Measured[R]], reference: Callable[[int], Measured[R]]
) -> tuple[Measured[R], Measured[R]]:
    """Round ``k`` of the server, then round ``k`` of the reference, for each of
    ``rounds``: load from outside the bench (other work on a shared machine) falls on
    both alike.  Each side's rounds merged into one run, answers in round order."""
    sides: tuple[list[Measured[R]], list[Measured[R]]] = ([], [])
    for k in range(rounds):
        sides[0].append(server(k))
        sides[1].append(reference(k))
    a, b = ((Run.merge([m[0] for m in side]), [x for m in side for x in m[1]])
            for side in sides)
    return a, b


def check_same(line: str, got: Sequence[Any], want: Sequence[Any]) -> None:
    """Raise :class:`BenchError` naming the first item where the server and the
    reference disagree: a number for wrong answers is worth nothing."""
    if len(got) != len(want):
        raise BenchError(f"{line}: {len(got)} answers from the server, {len(want)} expected")
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            raise BenchError(f"{line}: item {i}: the server answered {g!r}, the reference {w!r}")


# -- reporting -------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One row of the table: the server's run and, when there is one, the reference's."""

    name: str
    unit: str  # what an item is, in the rate: "req" or "pts"
    server: Run
    reference: Run | None = None

    @property
    def ratio(self) -> float | None:
        """Server time per item over reference time per item (1.0: no overhead)."""
        if self.reference is None:
            return None
        return self.reference.rate / self.server.rate

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": f"{self.unit}/s", "server": self.server.as_dict(),
                "reference": None if self.reference is None else self.reference.as_dict(),
                "ratio": self.ratio}


def _rate(run: Run | None, unit: str) -> str:
    if run is None:
        return "—"
    text = f"{run.rate:,.0f} {unit}/s"
    if run.per_call > 1:  # big requests: say how long one takes
        text += f" ({run.percentile(50):.2f} s)"
    return text


def _secs(s: float | None) -> str:
    """1.23 s, 123 ms, 12.3 ms, 1.23 ms, 0.012 ms."""
    if s is None:
        return "—"
    if s == 0:
        return "0"
    if s >= 1:
        return f"{s:.2f} s"
    ms = s * 1000
    digits = 3 if ms < 0.1 else 2 if ms < 10 else 1 if ms < 100 else 0
    return f"{ms:.{digits}f} ms"


def _pair(line: Line, q: float) -> str:
    ref = None if line.reference is None else line.reference.percentile(q)
    return f"{_secs(line.server.percentile(q))} / {_secs(ref)}"


def table(lines: Sequence[Line], reference: str = "raw SQL (psycopg)") -> str:
    """Throughput, ratio and latency: the table for the README."""
    out = [
        f"| line | server | {reference} | ratio | p50 server / ref | p99 server / ref |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for ln in lines:
        ratio = "—" if ln.ratio is None else f"{ln.ratio:.2f}×"
        out.append(f"| {ln.name} | {_rate(ln.server, ln.unit)} | "
                   f"{_rate(ln.reference, ln.unit)} | {ratio} | {_pair(ln, 50)} | "
                   f"{_pair(ln, 99)} |")
    return "\n".join(out)


def cpu_table(lines: Sequence[Line], processes: Sequence[str] = ("client", "server",
                                                                  "postgres")) -> str:
    """Where the time goes: wall time and each process's CPU per item, server run
    then reference run (a CPU figure above the wall time means work in parallel)."""
    head = " | ".join(f"{p} CPU" for p in processes)
    out = [f"| per item | wall | {head} |", "| --- | ---: |" + " ---: |" * len(processes)]
    for ln in lines:
        for label, run in (("server", ln.server), ("ref", ln.reference)):
            if run is None:
                continue
            cells = " | ".join(_secs(run.cpu_per_item(p)) for p in processes)
            out.append(f"| {ln.name}: {label} | {_secs(run.wall / run.items)} | {cells} |")
    return "\n".join(out)


def _first(path: str, key: str) -> str:
    try:
        for row in Path(path).read_text().splitlines():
            if row.startswith(key):
                return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def machine(database_url: str | None = None) -> dict[str, str]:
    """What the numbers were measured on."""
    kib = _first("/proc/meminfo", "MemTotal").split()[0]
    facts = {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cores": str(len(os.sched_getaffinity(0))),
        "memory": f"{int(kib) / 2**20:.0f} GiB" if kib.isdigit() else "?",
        "os": platform.platform(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        **{p: _version(p) for p in ("fastapi", "uvicorn", "psycopg", "httpx")},
    }
    if database_url is not None:
        with db.connect(database_url) as conn:
            row = conn.execute("SELECT current_setting('server_version'), "
                               "postgis_lib_version()").fetchone()
        if row is not None:
            facts["postgresql"] = str(row[0]).split()[0]
            facts["postgis"] = str(row[1])
    return facts


@dataclass
class Report:
    """Lines, the machine and the parameters of one run; JSON for the record."""

    title: str
    lines: list[Line] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        return table(self.lines)

    def machine_line(self) -> str:
        return "; ".join(f"{k} {v}" for k, v in self.machine.items())

    def write_json(self, path: Path) -> None:
        doc = {"title": self.title, "machine": self.machine, "params": self.params,
               "lines": [ln.as_dict() for ln in self.lines]}
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
