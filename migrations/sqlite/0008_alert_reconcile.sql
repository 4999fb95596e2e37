-- Reap3r schema 0008 (an index for notification routing's reconciliation), SQLite dialect.
-- Kept identical to migrations/postgres/0008_alert_reconcile.sql.

-- When routing starts it reads every firing event of every organisation (to route what it
-- missed while it was down); alert_events keeps resolved events forever, so without this the
-- read would scan the whole history.
CREATE INDEX alert_events_state ON alert_events (state, id);
