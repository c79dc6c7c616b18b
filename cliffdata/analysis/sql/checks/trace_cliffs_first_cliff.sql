-- trace_cliffs.first_cliff_index is the smallest cliff token_index of the trace (null if none).
with

first_cliffs as (
    select
        trace_id,
        min(token_index) as first_cliff_index
    from cliffs
    group by trace_id
),

final as (
    select
        t.trace_id,
        t.first_cliff_index as first_cliff_index_stated,
        f.first_cliff_index as first_cliff_index_counted
    from trace_cliffs as t
    left join first_cliffs as f
        on f.trace_id = t.trace_id
    where t.first_cliff_index is distinct from f.first_cliff_index
)

select
    *
from final
order by trace_id
