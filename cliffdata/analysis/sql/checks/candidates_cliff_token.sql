-- Every cliff with candidates has exactly one cliff-token row, which is a cliff by definition and
-- reuses the main rollout (no tokens generated here); only that row may lie outside the top-k
-- (candidate_rank null); and every candidates row belongs to a cliff. (Which cliffs have candidates
-- is `cliffs.use`: all, the feasible or the replicated ones.)
with

per_cliff as (
    select
        trace_id,
        token_index,
        count(*) filter (where is_cliff_token) as num_cliff_token_rows,
        count(*) filter (where is_cliff_token and is_cliff and num_generated_tokens = 0) as num_valid_cliff_token_rows,
        count(*) filter (where candidate_rank is null and not is_cliff_token) as num_unranked_others
    from candidates
    group by
        trace_id,
        token_index
),

final as (
    select
        p.trace_id,
        p.token_index,
        c.trace_id is not null as is_a_cliff,
        p.num_cliff_token_rows,
        p.num_valid_cliff_token_rows,
        p.num_unranked_others
    from per_cliff as p
    left join cliffs as c
        on p.trace_id = c.trace_id
        and p.token_index = c.token_index
    where c.trace_id is null
        or p.num_cliff_token_rows <> 1
        or p.num_valid_cliff_token_rows <> 1
        or p.num_unranked_others > 0
)

select
    *
from final
order by
    trace_id,
    token_index
