-- pass@k is a probability in [0, 1] and never falls as k grows within a curve.
with

ordered as (
    select
        scope,
        correctness,
        arm,
        k,
        pass_at_k,
        lag(pass_at_k) over (partition by scope, correctness, arm order by k) as previous_pass_at_k
    from pass_at_k
),

final as (
    select
        *
    from ordered
    where pass_at_k is null
        or pass_at_k < 0
        or pass_at_k > 1
        or pass_at_k < previous_pass_at_k - 1e-12
)

select
    *
from final
order by
    scope,
    correctness,
    arm,
    k
