-- Arms and prefixes (protocol §1, §5): del keeps token_index response tokens, keep token_index + 1;
-- critical_del and random_del keep token_index tokens, only on failed traces, and have no is_first.
select
    trace_id,
    token_index,
    arm,
    prefix_length,
    is_first,
    is_correct
from ablation
where arm is null
    or arm not in ('del', 'keep', 'critical_del', 'random_del')
    or prefix_length is distinct from token_index + (arm = 'keep')::integer
    or (arm in ('del', 'keep') and is_first is null)
    or (arm in ('critical_del', 'random_del') and (is_first is not null or is_correct is distinct from false))
order by
    trace_id,
    token_index,
    arm
