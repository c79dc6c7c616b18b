-- Taxonomy (protocol §4, §5 RQ2): cliffs by category against the same 2x2 over every response token
-- of the traces in trace_cliffs (the baseline). Shares are within the three-way taxonomy
-- (deterministic, uncertain, sampled_off); 'other' (H <= H* and not greedy) is counted but excluded.
-- `feasible_share`: the share of a category's cliffs whose token can carry a detectable drop by the
-- sampler identity; a deterministic cliff (pi_s near 1) almost never can.
-- The 'greedy' row compares the greedy share of all cliffs with the rank-1 share of all tokens.
-- Cliffs keep the category the cliffs stage gave them; pass the same H* and entropy here.
-- $entropy_threshold: H* in nats; $use_full_entropy: entropy_full instead of the top-20 entropy;
-- $include_empty_prefix: false drops cliffs at token_index 0 (paper mode).
with

categories as (
    select
        *
    from (
        values
            (1, 'deterministic', 'three_way'),
            (2, 'uncertain', 'three_way'),
            (3, 'sampled_off', 'three_way'),
            (4, 'other', 'excluded')
    ) as c(category_order, category, share_of)
),

included_cliffs as (
    select
        category,
        is_greedy,
        feasible
    from cliffs
    where $include_empty_prefix or token_index > 0
),

cliff_counts as (
    select
        category,
        count(*) as num_cliffs,
        count(*) filter (where feasible) as num_feasible
    from included_cliffs
    group by category
),

baseline_tokens as (
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

-- counted by (greedy, high entropy) before naming the category (the taxonomy's macros,
-- cliffdata/cliffs/taxonomy.py): 10^8 tokens hash two booleans, not a string
baseline_groups as (
    select
        is_greedy,
        high_entropy(entropy, $entropy_threshold) as high,
        count(*) as num_tokens
    from baseline_tokens
    group by all
),

baseline_categories as (
    select
        category_of(high, is_greedy) as category,
        num_tokens
    from baseline_groups
),

baseline_counts as (
    select
        category,
        sum(num_tokens)::bigint as baseline_count
    from baseline_categories
    group by category
),

category_counts as (
    select
        c.category_order,
        c.category,
        c.share_of,
        coalesce(cc.num_cliffs, 0) as num_cliffs,
        coalesce(cc.num_feasible, 0) as num_feasible,
        coalesce(bc.baseline_count, 0) as baseline_count
    from categories as c
    left join cliff_counts as cc
        on cc.category = c.category
    left join baseline_counts as bc
        on bc.category = c.category
),

category_shares as (
    select
        category_order,
        category,
        share_of,
        num_cliffs,
        num_feasible,
        case
            when share_of = 'three_way'
                then num_cliffs / nullif(sum(num_cliffs) filter (where share_of = 'three_way') over (), 0)
        end as cliff_share,
        baseline_count,
        case
            when share_of = 'three_way'
                then baseline_count / nullif(sum(baseline_count) filter (where share_of = 'three_way') over (), 0)
        end as baseline_share
    from category_counts
),

greedy_cliffs as (
    select
        count(*) filter (where is_greedy) as num_cliffs,
        count(*) filter (where is_greedy and feasible) as num_feasible,
        count(*) filter (where is_greedy) / nullif(count(*), 0) as cliff_share
    from included_cliffs
),

greedy_baseline as (
    select
        coalesce(sum(num_tokens) filter (where is_greedy), 0)::bigint as baseline_count,
        coalesce(sum(num_tokens) filter (where is_greedy), 0)::bigint
            / nullif(coalesce(sum(num_tokens), 0)::bigint, 0) as baseline_share
    from baseline_groups
),

greedy_shares as (
    select
        5 as category_order,
        'greedy' as category,
        'all' as share_of,
        c.num_cliffs,
        c.num_feasible,
        c.cliff_share,
        b.baseline_count,
        b.baseline_share
    from greedy_cliffs as c
    cross join greedy_baseline as b
),

final as (
    select
        category_order,
        category,
        share_of,
        num_cliffs::bigint as num_cliffs,
        cliff_share::double as cliff_share,
        baseline_count::bigint as baseline_count,
        baseline_share::double as baseline_share,
        (cliff_share / nullif(baseline_share, 0))::double as ratio,
        (num_feasible / nullif(num_cliffs, 0))::double as feasible_share
    from (
        select * from category_shares
        union all by name
        select * from greedy_shares
    )
)

select
    * exclude (category_order)
from final
order by category_order
