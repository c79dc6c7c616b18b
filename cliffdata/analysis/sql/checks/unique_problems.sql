-- Each problems row has a unique, non-null key (problem_id) (schema.KEYS).
select
    problem_id,
    count(*) as num_rows
from problems
group by
    problem_id
having count(*) > 1 or problem_id is null
order by
    problem_id
