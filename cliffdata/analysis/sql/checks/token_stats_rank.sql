-- Tie-aware rank is in 1..20, or 21 for a token outside the top-20 (protocol §4).
select
    trace_id,
    token_index,
    rank
from token_stats
where rank is null
    or rank not between 1 and 21
order by
    trace_id,
    token_index
