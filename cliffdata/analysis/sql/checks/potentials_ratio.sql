-- potential = num_correct / num_rollouts where rollouts ran, and 0 where none did (filled positions).
select
    trace_id,
    token_index,
    num_correct,
    num_rollouts,
    potential
from potentials
where (num_rollouts > 0 and abs(potential - num_correct / num_rollouts) > 1e-12)
    or (num_rollouts = 0 and potential <> 0)
order by
    trace_id,
    token_index
