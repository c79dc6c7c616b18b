-- Every ablation prefix got rollouts, 0 <= num_correct <= num_rollouts, and the potential is their
-- ratio (so it lies in [0, 1]).
select
    trace_id,
    token_index,
    arm,
    num_rollouts,
    num_correct,
    potential,
    num_generated_tokens
from ablation
where num_rollouts is null
    or num_correct is null
    or potential is null
    or num_rollouts < 1
    or num_correct < 0
    or num_correct > num_rollouts
    or abs(potential - num_correct / num_rollouts) > 1e-12
    or num_generated_tokens < 0
order by
    trace_id,
    token_index,
    arm
