-- Every ablation prefix got rollouts, 0 <= num_correct <= num_rollouts, and the potential is their
-- ratio (so it lies in [0, 1]); del rows count their re-emissions (0 <= num_reemitted <= num_rollouts),
-- the other arms leave it null; del_resilient generates nothing of its own.
select
    trace_id,
    token_index,
    arm,
    num_rollouts,
    num_correct,
    potential,
    num_reemitted,
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
    or (arm = 'del' and (num_reemitted is null or num_reemitted < 0 or num_reemitted > num_rollouts))
    or (arm <> 'del' and num_reemitted is not null)
    or (arm = 'del_resilient' and num_generated_tokens <> 0)
order by
    trace_id,
    token_index,
    arm
