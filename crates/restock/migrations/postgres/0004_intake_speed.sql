-- Intake at batch speed. Kept identical in both flavours.

-- A restock supersedes the restocks of the same variant still being released
-- (pending or waiting). Without this, each batch that restocks anything scans
-- every restock event ever recorded to find them.
CREATE INDEX restock_events_open ON restock_events (variant_id)
    WHERE plan_state IN ('pending', 'waiting');
