-- Each risk_labels row has a unique, non-null key (trace_id, token_index) (schema.KEYS).
select
    trace_id,
    token_index,
    count(*) as num_rows
from risk_labels
group by
    trace_id,
    token_index
having count(*) > 1 or trace_id is null or token_index is null
order by
    trace_id,
    token_index
