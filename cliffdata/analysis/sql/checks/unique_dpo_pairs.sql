-- One pair per (trace_id, token_index, chosen_id) in a variant's pairs.
with

counted as (
    select
        trace_id,
        token_index,
        chosen_id,
        count(*) as num_rows
    from dpo_pairs
    group by all
),

final as (
    select
        *
    from counted
    where num_rows > 1
)

select
    *
from final
order by
    trace_id,
    token_index,
    chosen_id
