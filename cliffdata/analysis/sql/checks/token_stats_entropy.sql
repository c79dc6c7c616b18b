-- Entropies (top-20 and full vocabulary) are non-negative.
select
    trace_id,
    token_index,
    entropy,
    entropy_full
from token_stats
where entropy is null
    or entropy < 0
    or entropy_full < 0
order by
    trace_id,
    token_index
