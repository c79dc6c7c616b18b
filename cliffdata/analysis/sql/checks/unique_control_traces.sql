-- Each pool trace has a unique, non-null trace_id (schema.KEYS), named <problem_id>#control<j>, so that it
-- never shares an id with a sampled trace.
select
    trace_id,
    count(*) as num_rows
from control_traces
group by
    trace_id
having count(*) > 1 or trace_id is null or trace_id not like '%#control%'
order by
    trace_id
