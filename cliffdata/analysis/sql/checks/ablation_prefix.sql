-- Arms and prefixes (protocol §1, §5): del keeps token_index response tokens, keep token_index + 1;
-- critical_del and random_del keep token_index tokens, only on failed traces, and have no is_first.
-- The matched arms (matched_del keeps token_index tokens, matched_keep token_index + 1) sit on failed
-- traces, name the cliff they stand beside, and carry its is_first; no other arm names a cliff.
-- del_resilient (the del continuations that did not re-emit the cliff token) sits beside a del row.
select
    trace_id,
    token_index,
    arm,
    prefix_length,
    is_first,
    is_correct,
    cliff_trace_id,
    cliff_index
from ablation
where arm is null
    or arm not in ('del', 'keep', 'critical_del', 'random_del', 'matched_del', 'matched_keep', 'del_resilient')
    or prefix_length is distinct from token_index + (arm in ('keep', 'matched_keep'))::integer
    or (arm in ('del', 'keep', 'del_resilient') and is_first is null)
    or (arm = 'del_resilient' and not exists (
        select 1 from ablation as d
        where d.arm = 'del' and d.trace_id = ablation.trace_id and d.token_index = ablation.token_index
            and d.num_rollouts - d.num_reemitted = ablation.num_rollouts))
    or (arm in ('critical_del', 'random_del') and (is_first is not null or is_correct is distinct from false))
    or (arm in ('matched_del', 'matched_keep') and (is_first is null or is_correct is distinct from false
        or cliff_trace_id is null or cliff_index is null))
    or (arm not in ('matched_del', 'matched_keep') and (cliff_trace_id is not null or cliff_index is not null))
order by
    trace_id,
    token_index,
    arm
