-- Rollout counts are non-negative and num_correct <= num_rollouts.
select
    trace_id,
    token_index,
    num_correct,
    num_rollouts
from potentials
where num_correct is null
    or num_rollouts is null
    or num_correct < 0
    or num_correct > num_rollouts
order by
    trace_id,
    token_index
