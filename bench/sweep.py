"""The periodic sweep against a backlog: the product's leases_sweep beside a bare-SQL floor.

On a board of 200,000 items of which 100,000 hold claims whose leases ran out (a broker that
was down for a while), it measures one sweep that expires them all, on SQLite and on
PostgreSQL:

  sweep  board.services.leases_sweep, the product's sweep, in its batches (SWEEP_BATCH_SIZE),
         with one `expired` checkpoint per item: seconds, statements issued (counted by a
         Django execute wrapper), peak Python memory (tracemalloc), and the same at a fifth
         of the backlog to show that memory does not grow with it;
  floor  bare SQL without Django, with the same batch size: per batch, in one transaction,
         one UPDATE ... RETURNING feeding an INSERT of the events (a data-modifying CTE on
         PostgreSQL; on SQLite BEGIN IMMEDIATE + UPDATE ... RETURNING + one INSERT).

After each measurement it checks the database: no claim left, every released item with one
`expired` checkpoint, attempts up by one, tokens unchanged.

It creates its own databases like bench/claims.py (a fresh SQLite file; the PostgreSQL
database named by --postgres-url, whose name must contain "bench", dropped and re-created).

    .venv/bin/python bench/sweep.py --postgres-url postgres://postgres@127.0.0.1:55432/pb_bench
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from claims import Target, _django, prepare  # noqa: E402 - the bench's shared setup

STALE, TOTAL = 100_000, 200_000

PG_FLOOR = """
WITH released AS (
    UPDATE board_item AS i
    SET state = 'available', attempts = i.attempts + 1, holder_id = NULL,
        lease_expires_at = NULL, claimed_at = NULL
    WHERE i.id IN (
        SELECT id FROM board_item WHERE state = 'claimed' AND lease_expires_at <= now()
        ORDER BY lease_expires_at LIMIT %s FOR UPDATE SKIP LOCKED
    )
    RETURNING i.id, i.run_id, i.token, i.attempts
)
INSERT INTO board_checkpoint (run_id, item_id, kind, at, actor_id, actor_name, token, reason,
                              data)
SELECT run_id, id, 'expired', now(), NULL, 'lease timer', token, '',
       jsonb_build_object('attempts', attempts)
FROM released
"""
SQLITE_FLOOR_UPDATE = """
UPDATE board_item SET state = 'available', attempts = attempts + 1, holder_id = NULL,
    lease_expires_at = NULL, claimed_at = NULL
WHERE id IN (SELECT id FROM board_item WHERE state = 'claimed' AND lease_expires_at <= ?
             ORDER BY lease_expires_at LIMIT ?)
RETURNING id, run_id, token, attempts
"""
SQLITE_FLOOR_INSERT = """
INSERT INTO board_checkpoint (run_id, item_id, kind, at, actor_id, actor_name, token, reason,
                              data)
SELECT json_extract(value, '$[1]'), json_extract(value, '$[0]'), 'expired', ?, NULL,
       'lease timer', json_extract(value, '$[2]'), '',
       json_object('attempts', json_extract(value, '$[3]'))
FROM json_each(?)
"""


def reset_board(target: Target, stale: int) -> None:
    """`TOTAL` items in the run: the first `stale` claimed by user 0 with leases that ran out
    an hour ago (token 1), the rest available; no checkpoints."""
    user = target.users[0]
    conn = target.raw_connect()
    try:
        if target.vendor == "postgresql":
            conn.execute("TRUNCATE board_checkpoint, board_item, board_item_prerequisites")
            conn.execute(
                "INSERT INTO board_item (run_id, position, key, title, body, section, "
                "section_note, state, token, attempts, holder_id, claimed_at, "
                "lease_expires_at) SELECT %s, n, 'step-' || n, 'Step ' || n, '', '', '', "
                "CASE WHEN n <= %s THEN 'claimed' ELSE 'available' END, "
                "CASE WHEN n <= %s THEN 1 ELSE 0 END, 0, "
                "CASE WHEN n <= %s THEN %s END, "
                "CASE WHEN n <= %s THEN now() - interval '75 minutes' END, "
                "CASE WHEN n <= %s THEN now() - interval '1 hour' - n * interval '1 ms' END "
                "FROM generate_series(1, %s) n",
                [target.run_id, stale, stale, stale, user, stale, stale, TOTAL],
            )
            conn.execute("VACUUM ANALYZE board_item")
            conn.execute("CHECKPOINT")
        else:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM board_checkpoint")
            conn.execute("DELETE FROM board_item_prerequisites")
            conn.execute("DELETE FROM board_item")
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO board_item (run_id, position, key, title, body, section, "
                "section_note, state, token, attempts, holder_id, claimed_at, "
                "lease_expires_at) SELECT ?, i, 'step-' || i, 'Step ' || i, '', '', '', "
                "CASE WHEN i <= ? THEN 'claimed' ELSE 'available' END, "
                "CASE WHEN i <= ? THEN 1 ELSE 0 END, 0, "
                "CASE WHEN i <= ? THEN ? END, "
                "CASE WHEN i <= ? THEN strftime('%Y-%m-%d %H:%M:%f', 'now', '-75 minutes') END, "
                "CASE WHEN i <= ? THEN strftime('%Y-%m-%d %H:%M:%f', 'now', '-60 minutes') END "
                "FROM n",
                [TOTAL, target.run_id, stale, stale, stale, user, stale, stale],
            )
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def verify(target: Target, stale: int) -> list[str]:
    conn = target.raw_connect()
    try:
        one = conn.execute
        claimed = one("SELECT count(*) FROM board_item WHERE state = 'claimed'").fetchone()[0]
        released = one(
            "SELECT count(*) FROM board_item WHERE state = 'available' AND attempts = 1 "
            "AND token = 1 AND holder_id IS NULL AND lease_expires_at IS NULL"
        ).fetchone()[0]
        events = one(
            "SELECT count(*), count(DISTINCT item_id) FROM board_checkpoint "
            "WHERE kind = 'expired' AND token = 1"
        ).fetchone()
        others = one("SELECT count(*) FROM board_checkpoint WHERE kind <> 'expired'").fetchone()[0]
    finally:
        conn.close()
    problems = []
    if claimed:
        problems.append(f"{claimed} claims left")
    if released != stale:
        problems.append(f"{released} items released as expected, not {stale}")
    if tuple(events) != (stale, stale):
        problems.append(f"{events[0]} expired checkpoints on {events[1]} items, not {stale}")
    if others:
        problems.append(f"{others} checkpoints of other kinds")
    return problems


def _product_sweep(env: dict[str, str], batch: int, result: mp.Queue) -> None:
    """In a Django process: one leases_sweep, timed, its statements counted, memory traced."""
    _django(env)
    import tracemalloc

    from django.db import connection

    from board.services import leases_sweep

    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    connection.ensure_connection()
    tracemalloc.start()
    with connection.execute_wrapper(count):
        began = time.perf_counter()
        expired = leases_sweep(batch_size=batch)
        seconds = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    result.put((expired, seconds, statements, peak))


def measure_product(target: Target, stale: int, batch: int) -> dict:
    reset_board(target, stale)
    context = mp.get_context("spawn")
    result = context.Queue()
    env = {**target.env(), "SWEEP_BATCH_SIZE": str(batch)}
    process = context.Process(target=_product_sweep, args=(env, batch, result))
    process.start()
    expired, seconds, statements, peak = result.get(timeout=1800)
    process.join()
    return {"expired": expired, "seconds": seconds, "statements": statements, "peak": peak,
            "problems": verify(target, stale)}


def measure_floor(target: Target, stale: int, batch: int) -> dict:
    reset_board(target, stale)
    conn = target.raw_connect()
    expired = batches = 0
    began = time.perf_counter()
    try:
        while True:
            if target.vendor == "postgresql":
                with conn.transaction():
                    done = conn.execute(PG_FLOOR, [batch]).rowcount
            else:
                from datetime import UTC, datetime

                now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
                conn.execute("BEGIN IMMEDIATE")
                rows = conn.execute(SQLITE_FLOOR_UPDATE, [now, batch]).fetchall()
                if rows:
                    conn.execute(SQLITE_FLOOR_INSERT, [now, json.dumps(rows)])
                conn.execute("COMMIT")
                done = len(rows)
            batches += 1
            expired += done
            if done < batch:
                break
    finally:
        conn.close()
    seconds = time.perf_counter() - began
    return {"expired": expired, "seconds": seconds, "batches": batches,
            "problems": verify(target, stale)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", ""))
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--batch", type=int, default=5000,
                        help="items per transaction, for the sweep and the floor (default 5000)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {STALE:,} lapsed claims among {TOTAL:,} items; "
          f"batches of {args.batch:,}")
    work = Path(tempfile.mkdtemp(prefix="pullboard-sweep-"))
    verdicts = []
    try:
        for vendor in [d.strip() for d in args.databases.split(",") if d.strip()]:
            var_dir = work / vendor
            var_dir.mkdir()
            if vendor == "sqlite":
                url = f"sqlite:///{var_dir / 'bench.sqlite3'}"
            elif args.postgres_url:
                url = args.postgres_url
            else:
                print("PostgreSQL skipped: give --postgres-url or set BENCH_POSTGRES_URL")
                continue
            print(f"\n== {vendor}: {url} ==", flush=True)
            target = prepare(vendor, url, var_dir, "memory://", 1)
            small = measure_product(target, STALE // 5, args.batch)
            sweep = measure_product(target, STALE, args.batch)
            floor = measure_floor(target, STALE, args.batch)
            batches = -(-STALE // args.batch) + (STALE % args.batch == 0)
            for name, figures in (("sweep", sweep), ("floor", floor)):
                extra = (f"{figures['statements']} statements "
                         f"({figures['statements'] / batches:.1f} per batch of {batches}), "
                         f"peak Python memory {figures['peak'] / 2**20:.1f} MiB"
                         if name == "sweep" else f"{figures['batches']} batches")
                status = "ok" if not figures["problems"] else "FAILED " + "; ".join(
                    figures["problems"])
                rate = figures["expired"] / figures["seconds"]
                print(f"{vendor:10} {name}: {figures['expired']:,} expired in "
                      f"{figures['seconds']:6.2f} s = {rate:8.0f}/s  {extra}  verify: {status}",
                      flush=True)
            print(f"{vendor:10} sweep of {STALE // 5:,}: {small['seconds']:.2f} s, "
                  f"{small['statements']} statements, peak Python memory "
                  f"{small['peak'] / 2**20:.1f} MiB  verify: "
                  f"{'ok' if not small['problems'] else small['problems']}")
            ratio = sweep["seconds"] / floor["seconds"]
            flat = sweep["peak"] <= 1.5 * small["peak"]
            print(f"{vendor:10} sweep / floor: {ratio:.2f} x the floor's time; memory at "
                  f"{STALE:,} vs {STALE // 5:,}: {sweep['peak'] / max(small['peak'], 1):.2f} x")
            verdicts.append((vendor, ratio, flat, sweep, floor))
        print("\nTargets:")
        for vendor, ratio, flat, sweep, floor in verdicts:
            if vendor == "postgresql":
                print(f"  [{'PASS' if ratio <= 1.5 else 'MISS'}] PostgreSQL: sweep <= 1.5 x "
                      f"the floor's time: {ratio:.2f} x")
            print(f"  [{'PASS' if flat else 'MISS'}] {vendor}: memory does not grow with the "
                  f"backlog")
            ok = not sweep["problems"] and not floor["problems"]
            print(f"  [{'PASS' if ok else 'MISS'}] {vendor}: every claim expired exactly once")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
