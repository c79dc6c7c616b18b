-- Every pair: chosen differs from rejected, potentials in [0, 1], a known split, and a prompt that is
-- at least as long as the cliff position (prompt + response[:i]).
with

final as (
    select
        trace_id,
        token_index,
        chosen_id,
        rejected_id,
        split
    from dpo_pairs
    where chosen_id = rejected_id
        or chosen_potential not between 0 and 1
        or rejected_potential not between 0 and 1
        or p_prev not between 0 and 1
        or split not in ('train', 'heldout')
        or len(prompt_ids) < token_index
)

select
    *
from final
order by
    trace_id,
    token_index,
    chosen_id
