-- +goose Up
-- The region a pre-warm was made for (the interview's region when the
-- pre-warmer claimed it). When the interview's region changes afterwards,
-- its pre-warmed machine is in the wrong place: the pre-warmer (or a start)
-- destroys it and creates one in the new region. The machine's own region
-- (machine_region) cannot tell: a capacity fallback may have placed it
-- elsewhere on purpose.
ALTER TABLE interviews.interview_sessions
	ADD COLUMN prewarm_region text CHECK (char_length(prewarm_region) <= 64);
-- Pre-warms made before this column existed were made for the current region.
UPDATE interviews.interview_sessions SET prewarm_region = region
	WHERE prewarm_claimed_at IS NOT NULL OR prewarmed_at IS NOT NULL;

-- +goose Down
ALTER TABLE interviews.interview_sessions DROP COLUMN prewarm_region;
