-- Entropy x greedy (protocol §4, §5 RQ2): the full 2x2 of cliff tokens against the same 2x2 over every
-- response token of the traces in trace_cliffs (the baseline), with the margins. Shares are of all
-- cliffs / all baseline tokens (four cells, 'other' included; taxonomy.sql gives the three-way shares).
-- The 'greedy' row is the cliff greedy ratio against the baseline rank-1 share.
-- Cliffs use the entropy the cliffs stage categorised with; pass the same H* and entropy here.
-- $entropy_threshold: H* in nats; $use_full_entropy: entropy_full instead of the top-20 entropy for the
-- baseline; $include_empty_prefix: false drops cliffs at token_index 0 (paper mode).
with

cells as (
    select
        *
    from (
        values
            -- the four category cells are named by the taxonomy's macro (cliffdata/cliffs/taxonomy.py)
            (1, category_of(false, true), 'low', 'greedy'),
            (2, category_of(true, true), 'high', 'greedy'),
            (3, category_of(true, false), 'high', 'not_greedy'),
            (4, category_of(false, false), 'low', 'not_greedy'),
            (5, 'greedy', 'all', 'greedy'),
            (6, 'not_greedy', 'all', 'not_greedy'),
            (7, 'low_entropy', 'low', 'all'),
            (8, 'high_entropy', 'high', 'all'),
            (9, 'all', 'all', 'all')
    ) as c(cell_order, cell, entropy, greedy)
),

cliff_tokens as (
    select
        case when high_entropy(entropy, $entropy_threshold) then 'high' else 'low' end as entropy,
        case when is_greedy then 'greedy' else 'not_greedy' end as greedy
    from cliffs
    where $include_empty_prefix or token_index > 0
),

baseline_entropies as (
    select
        s.is_greedy,
        case
            when $use_full_entropy then s.entropy_full
            else s.entropy
        end as entropy
    from token_stats as s
    semi join trace_cliffs as t
        on t.trace_id = s.trace_id
),

baseline_tokens as (
    select
        case when high_entropy(entropy, $entropy_threshold) then 'high' else 'low' end as entropy,
        case when is_greedy then 'greedy' else 'not_greedy' end as greedy
    from baseline_entropies
),

cliff_counts as (
    select
        c.cell,
        count(t.entropy) as num_cliffs
    from cells as c
    left join cliff_tokens as t
        on (c.entropy = 'all' or c.entropy = t.entropy)
        and (c.greedy = 'all' or c.greedy = t.greedy)
    group by c.cell
),

-- the four (entropy, greedy) groups first: joining 10^8 tokens to the cells row by row took 8 s
baseline_groups as (
    select
        entropy,
        greedy,
        count(*) as num_tokens
    from baseline_tokens
    group by all
),

baseline_counts as (
    select
        c.cell,
        coalesce(sum(t.num_tokens), 0)::bigint as baseline_count
    from cells as c
    left join baseline_groups as t
        on (c.entropy = 'all' or c.entropy = t.entropy)
        and (c.greedy = 'all' or c.greedy = t.greedy)
    group by c.cell
),

counted as (
    select
        c.cell_order,
        c.cell,
        c.entropy,
        c.greedy,
        cc.num_cliffs,
        bc.baseline_count
    from cells as c
    inner join cliff_counts as cc
        on cc.cell = c.cell
    inner join baseline_counts as bc
        on bc.cell = c.cell
),

shares as (
    select
        *,
        num_cliffs / nullif(max(num_cliffs) filter (where cell = 'all') over (), 0) as cliff_share,
        baseline_count / nullif(max(baseline_count) filter (where cell = 'all') over (), 0) as baseline_share
    from counted
),

final as (
    select
        cell_order,
        cell,
        entropy,
        greedy,
        num_cliffs::bigint as num_cliffs,
        cliff_share::double as cliff_share,
        baseline_count::bigint as baseline_count,
        baseline_share::double as baseline_share,
        (cliff_share / nullif(baseline_share, 0))::double as ratio
    from shares
)

select
    * exclude (cell_order)
from final
order by cell_order
