-- trace_cliffs.num_cliffs equals the number of cliffs rows of the trace, and every trace with
-- cliffs has a trace_cliffs row.
with

cliff_counts as (
    select
        trace_id,
        count(*) as num_cliffs
    from cliffs
    group by trace_id
),

final as (
    select
        coalesce(t.trace_id, c.trace_id) as trace_id,
        t.num_cliffs as num_cliffs_stated,
        coalesce(c.num_cliffs, 0) as num_cliffs_counted
    from trace_cliffs as t
    full outer join cliff_counts as c
        on c.trace_id = t.trace_id
    where t.trace_id is null
        or t.num_cliffs is distinct from coalesce(c.num_cliffs, 0)
)

select
    *
from final
order by trace_id
