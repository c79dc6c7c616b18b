-- Greedy means tie-aware rank 1 (protocol §4).
select
    trace_id,
    token_index,
    rank,
    is_greedy
from token_stats
where is_greedy is distinct from (rank = 1)
order by
    trace_id,
    token_index
