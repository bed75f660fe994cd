"""Database-level guard for invariant 3: no checkpoint is ever updated or deleted, whatever
code path (ORM, admin, raw SQL from the application) tries it.

On SQLite only UPDATE is refused: Django's test flush empties tables with DELETE, and SQLite
has no TRUNCATE. The hash chain (verify command) still catches a deletion made there."""

from django.db import migrations

SQLITE_UP = """
CREATE TRIGGER board_checkpoint_no_update BEFORE UPDATE ON board_checkpoint
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
"""
SQLITE_DOWN = "DROP TRIGGER IF EXISTS board_checkpoint_no_update;"

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION board_checkpoint_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'checkpoints are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER board_checkpoint_no_change BEFORE UPDATE OR DELETE ON board_checkpoint
FOR EACH ROW EXECUTE FUNCTION board_checkpoint_append_only();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS board_checkpoint_no_change ON board_checkpoint;
DROP FUNCTION IF EXISTS board_checkpoint_append_only();
"""


def forwards(apps, schema_editor):
    sql = POSTGRES_UP if schema_editor.connection.vendor == "postgresql" else SQLITE_UP
    schema_editor.execute(sql)


def backwards(apps, schema_editor):
    sql = POSTGRES_DOWN if schema_editor.connection.vendor == "postgresql" else SQLITE_DOWN
    schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("board", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
