-- Each pass_at_k row has a unique, non-null key (scope, correctness, arm, k).
select
    scope,
    correctness,
    arm,
    k,
    count(*) as num_rows
from pass_at_k
group by
    scope,
    correctness,
    arm,
    k
having count(*) > 1 or scope is null or correctness is null or arm is null or k is null
order by
    scope,
    correctness,
    arm,
    k
