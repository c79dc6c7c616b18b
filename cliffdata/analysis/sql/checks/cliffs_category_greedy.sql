-- The category agrees with greediness (protocol §4, the taxonomy's macro category_of): a cliff's
-- category is one its greediness allows at some entropy.
select
    trace_id,
    token_index,
    is_greedy,
    category
from cliffs
where is_greedy is null
    or category not in (category_of(true, is_greedy), category_of(false, is_greedy))
order by
    trace_id,
    token_index
