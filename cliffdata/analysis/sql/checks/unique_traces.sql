-- Each traces row has a unique, non-null key (trace_id) (schema.KEYS).
select
    trace_id,
    count(*) as num_rows
from traces
group by
    trace_id
having count(*) > 1 or trace_id is null
order by
    trace_id
