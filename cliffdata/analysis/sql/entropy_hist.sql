-- Entropy distributions (protocol §5 RQ2): histogram of the entropy of cliff tokens and of every
-- response token of the traces in trace_cliffs (the baseline), as shares of each group; every bin is
-- listed (zero-filled). Bin b covers [b, b+1) * $max_entropy / $num_bins; values at or above
-- $max_entropy fall in the last bin.
-- $num_bins, $max_entropy (nats); $use_full_entropy: entropy_full for the baseline;
-- $include_empty_prefix: false drops cliffs at token_index 0 (paper mode).
with

bins as (
    select
        range as bin
    from range(0, $num_bins)
),

cliff_entropies as (
    select
        entropy
    from cliffs
    where $include_empty_prefix or token_index > 0
),

baseline_entropies as (
    select
        case
            when $use_full_entropy then s.entropy_full
            else s.entropy
        end as entropy
    from token_stats as s
    semi join trace_cliffs as t
        on t.trace_id = s.trace_id
),

-- multiply before dividing: 0.3 * 10 / 1.0 lands in bin 3, 0.3 / 0.1 would land in bin 2
cliff_counts as (
    select
        least(floor(entropy * $num_bins / $max_entropy), $num_bins - 1)::bigint as bin,
        count(*) as num_cliffs
    from cliff_entropies
    group by 1
),

baseline_counts as (
    select
        least(floor(entropy * $num_bins / $max_entropy), $num_bins - 1)::bigint as bin,
        count(*) as baseline_count
    from baseline_entropies
    group by 1
),

counted as (
    select
        b.bin,
        coalesce(c.num_cliffs, 0) as num_cliffs,
        coalesce(t.baseline_count, 0) as baseline_count
    from bins as b
    left join cliff_counts as c
        on c.bin = b.bin
    left join baseline_counts as t
        on t.bin = b.bin
),

final as (
    select
        bin,
        (bin * $max_entropy / $num_bins)::double as bin_start,
        ((bin + 1) * $max_entropy / $num_bins)::double as bin_end,
        num_cliffs::bigint as num_cliffs,
        (num_cliffs / nullif(sum(num_cliffs) over (), 0))::double as cliff_share,
        baseline_count::bigint as baseline_count,
        (baseline_count / nullif(sum(baseline_count) over (), 0))::double as baseline_share
    from counted
)

select
    *
from final
order by bin
