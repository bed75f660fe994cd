"""board_claim(): the claim on PostgreSQL as one call, so a claim is one round trip.

A claim takes the claimant's lock, counts their live claims, picks the item and writes the
item and its `claimed` checkpoint. The count must be read after the lock (two tabs of one
person would otherwise both pass the WIP check), and under READ COMMITTED only a new
statement sees what the lock waited for. From Python that is a transaction of four round
trips (BEGIN, lock, claim, COMMIT); in a PL/pgSQL function every statement takes its own
snapshot too, the plans are cached per connection, and the call is one round trip, in
autocommit or inside the caller's transaction.

The rules stay where board.services documents them (_claim); this is their PostgreSQL
statement, as the SQLite one is in board.services. Which teams the claimant may work for is
decided by accounts.access, in Python, and passed in as ids.

SQLite has no stored functions; its claim is the UPDATE ... RETURNING in board.services.
"""

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION board_claim(
    p_holder bigint,          -- the claimant (accounts_user.id)
    p_holder_name text,       -- their display name, for the checkpoint
    p_teams bigint[],         -- the teams they may work for
    p_run bigint,             -- only from this run (claim next), or NULL
    p_item bigint,            -- only this item (claim this), or NULL: the next one
    p_default_wip integer,    -- WIP_LIMIT, for runs without their own
    p_now timestamptz
) RETURNS SETOF board_item
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_held integer;
    v_item bigint;
BEGIN
    -- Serialises one person's claims until commit. NO KEY UPDATE does not conflict with the
    -- KEY SHARE lock that inserting rows referencing the user (checkpoints) takes.
    PERFORM 1 FROM accounts_user WHERE id = p_holder FOR NO KEY UPDATE;
    -- A holder is set iff the item is claimed (item_holder_iff_claimed). No condition on the
    -- state: with one, the planner could walk every claimed item by the end of its lease.
    SELECT count(*) INTO v_held FROM board_item WHERE holder_id = p_holder;

    IF p_item IS NULL THEN
        -- Best first: highest severity, oldest run, position. The runs are sorted first (a
        -- subquery with ORDER BY is not flattened), so the nested loop visits them in order
        -- and stops at the first item it can lock; each run's first available item is one
        -- step down the item_pool index. SKIP LOCKED: concurrent claimers each get another
        -- item without waiting.
        SELECT c.id INTO v_item FROM (
            SELECT cr.id, cr.severity, cr.launched_at FROM board_run cr
            WHERE cr.state = 'active' AND cr.team_id = ANY (p_teams)
              AND (p_run IS NULL OR cr.id = p_run)
              AND v_held < COALESCE(cr.wip_limit, p_default_wip)
            ORDER BY cr.severity, cr.launched_at, cr.id
        ) cr CROSS JOIN LATERAL (
            SELECT ci.id FROM board_item ci
            WHERE ci.run_id = cr.id AND ci.state = 'available'
            ORDER BY ci.position LIMIT 1
            FOR UPDATE OF ci SKIP LOCKED
        ) c
        ORDER BY cr.severity, cr.launched_at, cr.id
        LIMIT 1;
    ELSE
        -- A named item waits for another claimer instead of skipping it, so the loser then
        -- sees who won ("already held by ..."), not a still-available item.
        SELECT ci.id INTO v_item FROM board_item ci JOIN board_run cr ON cr.id = ci.run_id
        WHERE ci.id = p_item AND ci.state = 'available'
          AND cr.state = 'active' AND cr.team_id = ANY (p_teams)
          AND v_held < COALESCE(cr.wip_limit, p_default_wip)
        FOR UPDATE OF ci;
    END IF;

    IF v_item IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH claimed AS (
        UPDATE board_item AS i
        SET state = 'claimed', holder_id = p_holder, token = i.token + 1, claimed_at = p_now,
            lease_expires_at = p_now + r.lease_duration
        FROM board_run r
        WHERE r.id = i.run_id AND i.id = v_item
        RETURNING i.*
    ), logged AS (
        INSERT INTO board_checkpoint
            (run_id, item_id, kind, at, actor_id, actor_name, token, reason, data)
        SELECT run_id, id, 'claimed', claimed_at, holder_id, p_holder_name, token, '',
               jsonb_build_object('lease_expires_at', lease_expires_at)
        FROM claimed
    )
    SELECT * FROM claimed;
END;
$$;
"""
POSTGRES_DOWN = """
DROP FUNCTION IF EXISTS board_claim(bigint, text, bigint[], bigint, bigint, integer,
                                    timestamptz);
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN)


class Migration(migrations.Migration):
    dependencies = [("board", "0006_pool_index_of_available_items")]
    operations = [migrations.RunPython(forwards, backwards)]
