"""The ledger is append-only in the database itself: no UPDATE or DELETE of an entry, whoever asks."""

from django.db import migrations

FORBID = """
CREATE FUNCTION credits_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'credit ledger entries are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER credits_ledger_append_only
    BEFORE UPDATE OR DELETE ON credits_creditledgerentry
    FOR EACH ROW EXECUTE FUNCTION credits_ledger_append_only();
"""

ALLOW = """
DROP TRIGGER IF EXISTS credits_ledger_append_only ON credits_creditledgerentry;
DROP FUNCTION IF EXISTS credits_ledger_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("credits", "0001_initial")]

    operations = [migrations.RunSQL(FORBID, ALLOW)]
