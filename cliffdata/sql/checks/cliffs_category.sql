-- Every cliff has one of the four categories of protocol §4.
select
    trace_id,
    token_index,
    category
from cliffs
where category is null
    or category not in ('deterministic', 'uncertain', 'sampled_off', 'other')
order by
    trace_id,
    token_index
