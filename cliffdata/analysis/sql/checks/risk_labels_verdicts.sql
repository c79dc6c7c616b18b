-- Risk labels: a verdict on every row, and a cliff is a drop (protocol §2); only a cliff carries a
-- replication; feasibility is known exactly where max_drop is.
select
    trace_id,
    token_index,
    delta,
    is_cliff,
    replicated,
    max_drop,
    feasible
from risk_labels
where is_cliff is null
    or (is_cliff and delta <= 0)
    or (not is_cliff and replicated is not null)
    or (feasible is null) <> (max_drop is null)
order by
    trace_id,
    token_index
