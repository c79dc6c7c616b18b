-- is_first marks exactly the cliff with the smallest token_index of its trace.
with

ranked as (
    select
        trace_id,
        token_index,
        is_first,
        token_index = min(token_index) over (partition by trace_id) as should_be_first
    from cliffs
),

final as (
    select
        trace_id,
        token_index,
        is_first,
        should_be_first
    from ranked
    where is_first is distinct from should_be_first
)

select
    *
from final
order by
    trace_id,
    token_index
