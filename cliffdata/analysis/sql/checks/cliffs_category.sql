-- Every cliff has one of the four categories of protocol §4.
select
    trace_id,
    token_index,
    category
from cliffs
where category is null
    or category not in (category_of(false, true), category_of(true, true), category_of(true, false),
                        category_of(false, false))
order by
    trace_id,
    token_index
