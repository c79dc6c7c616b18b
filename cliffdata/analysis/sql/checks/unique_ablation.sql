-- Each ablation row has a unique, non-null key (trace_id, token_index, arm).
select
    trace_id,
    token_index,
    arm,
    count(*) as num_rows
from ablation
group by
    trace_id,
    token_index,
    arm
having count(*) > 1 or trace_id is null or token_index is null or arm is null
order by
    trace_id,
    token_index,
    arm
