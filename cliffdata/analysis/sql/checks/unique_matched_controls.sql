-- Each matched_controls row has a unique, non-null key (cliff_trace_id, cliff_index, trace_id, token_index)
-- (schema.KEYS).
select
    cliff_trace_id,
    cliff_index,
    trace_id,
    token_index,
    count(*) as num_rows
from matched_controls
group by
    cliff_trace_id,
    cliff_index,
    trace_id,
    token_index
having count(*) > 1 or cliff_trace_id is null or cliff_index is null or trace_id is null or token_index is null
order by
    cliff_trace_id,
    cliff_index,
    trace_id,
    token_index
