-- Cliff probability mass and greedy replacement by category (protocol §5 RQ2/3).
-- Per cliff: cpm = sum of the probabilities of the candidates that are cliffs relative to p_prev, the
-- sampled cliff token included (its row is a cliff by definition; outside the top-k its probability is
-- exp(logprob)); cpm_alternatives leaves the cliff token out (its probability defines the category, so
-- the paper's cpm partly restates the category: the order of the categories is read on the
-- alternatives). Greedy replacement: the candidate whose id is the greedy token, when that is not the
-- cliff token; recovery = (p_greedy - p_cliff) / (p_prev - p_cliff), null when greedy = cliff token.
-- One row per category of the cliffs stage and one for all cliffs.
with

categories as (
    select
        *
    from (
        values
            (1, 'deterministic'),
            (2, 'uncertain'),
            (3, 'sampled_off'),
            (4, 'other'),
            (5, 'all')
    ) as c(category_order, category)
),

per_cliff as (
    select
        trace_id,
        token_index,
        coalesce(sum(prob) filter (where is_cliff), 0) as cpm,
        coalesce(sum(prob) filter (where is_cliff and not is_cliff_token), 0) as cpm_alternatives,
        count(*) filter (where is_cliff and not is_cliff_token) as num_cliff_candidates,
        count(*) filter (where not is_cliff_token) as num_other_candidates,
        max(p_prev) as p_prev,
        max(potential) filter (where is_cliff_token) as p_cliff,
        max(potential) filter (where is_greedy and not is_cliff_token) as p_greedy
    from candidates
    group by
        trace_id,
        token_index
),

with_category as (
    select
        c.category,
        p.cpm,
        p.cpm_alternatives,
        p.num_cliff_candidates,
        p.num_other_candidates,
        (p.p_greedy - p.p_cliff) / nullif(p.p_prev - p.p_cliff, 0) as recovery
    from per_cliff as p
    inner join cliffs as c
        on c.trace_id = p.trace_id
        and c.token_index = p.token_index
),

-- every cliff counts in its own category and in 'all'
grouped as (
    select
        category,
        * exclude (category)
    from with_category
    union all
    select
        'all' as category,
        * exclude (category)
    from with_category
),

aggregated as (
    select
        category,
        count(*) as num_cliffs,
        avg(cpm) as cpm_mean,
        median(cpm) as cpm_median,
        avg(cpm_alternatives) as cpm_alternatives_mean,
        avg(num_cliff_candidates) as cliff_candidates_mean,
        sum(num_cliff_candidates) / nullif(sum(num_other_candidates), 0) as cliff_candidate_share,
        count(recovery) as num_greedy_replacements,
        avg(recovery) as recovery_mean,
        median(recovery) as recovery_median
    from grouped
    group by category
),

final as (
    select
        g.category_order,
        g.category,
        coalesce(a.num_cliffs, 0)::bigint as num_cliffs,
        a.cpm_mean::double as cpm_mean,
        a.cpm_median::double as cpm_median,
        a.cpm_alternatives_mean::double as cpm_alternatives_mean,
        a.cliff_candidates_mean::double as cliff_candidates_mean,
        a.cliff_candidate_share::double as cliff_candidate_share,
        coalesce(a.num_greedy_replacements, 0)::bigint as num_greedy_replacements,
        a.recovery_mean::double as recovery_mean,
        a.recovery_median::double as recovery_median
    from categories as g
    left join aggregated as a
        on a.category = g.category
)

select
    * exclude (category_order)
from final
order by category_order
