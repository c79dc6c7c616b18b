-- Each control row has a unique, non-null key (trace_id, token_index, candidate_id) (schema.KEYS).
select
    trace_id,
    token_index,
    candidate_id,
    count(*) as num_rows
from control
group by
    trace_id,
    token_index,
    candidate_id
having count(*) > 1 or trace_id is null or token_index is null or candidate_id is null
order by
    trace_id,
    token_index,
    candidate_id
