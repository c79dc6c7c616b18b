-- One row per searched trace with a grade: its problem, correctness and whether it holds a cliff (RQ1
-- occurrence, failed vs correct traces). $include_empty_prefix: false leaves out cliffs at token 0, as
-- the occurrence table does.
select
    t.trace_id,
    t.problem_id,
    t.is_correct,
    count(c.token_index) > 0 as has_cliff
from trace_cliffs as t
left join cliffs as c
    on c.trace_id = t.trace_id
    and ($include_empty_prefix or c.token_index > 0)
where t.is_correct is not null
group by
    t.trace_id,
    t.problem_id,
    t.is_correct
order by t.trace_id
