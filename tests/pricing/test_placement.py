"""The placement planner: fewest nodes first, then best fit, never more than a node sold."""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pricing.placement import PlacementError, plan_placements


def test_a_bid_that_fits_one_node_goes_to_the_tightest_fit():
    plan = plan_placements([("b1", 2)], {"big": 8, "snug": 2, "mid": 3})
    assert plan == {"b1": [("snug", 2)]}


def test_a_bid_too_big_for_any_node_takes_the_largest_nodes_first():
    plan = plan_placements([("b1", 7)], {"a": 3, "b": 4, "c": 2})
    assert plan == {"b1": [("b", 4), ("a", 3)]}


def test_winners_needing_more_than_sold_is_an_error():
    with pytest.raises(PlacementError):
        plan_placements([("b1", 5)], {"a": 4})


@given(
    st.lists(st.integers(1, 8), min_size=1, max_size=12),
    st.lists(st.integers(0, 8), min_size=1, max_size=8),
)
def test_every_winner_is_served_and_no_node_gives_more_than_it_sold(bid_units, node_units):
    winners = [(f"b{i}", u) for i, u in enumerate(bid_units)]
    sold = {f"n{i}": u for i, u in enumerate(node_units)}
    total_sold, demand = sum(node_units), sum(bid_units)
    if demand > total_sold:
        with pytest.raises(PlacementError):
            plan_placements(winners, sold)
        return
    plan = plan_placements(winners, sold)
    taken = {}
    for bid_id, units in winners:
        assert sum(u for _, u in plan[bid_id]) == units
        for node, u in plan[bid_id]:
            assert u > 0
            taken[node] = taken.get(node, 0) + u
    assert all(taken[node] <= sold[node] for node in taken)


def test_a_split_bid_prefers_the_buyers_region_among_the_plans_with_fewest_nodes():
    sold = {"far": 3, "near-1": 2, "near-2": 2}
    affinity = {"bid": {"far": (1, 100), "near-1": (0, 900), "near-2": (0, 800)}}
    # Without affinity: the fullest node first (far + one near); with it: both near nodes, still two hosts.
    assert plan_placements([("bid", 4)], sold) == {"bid": [("far", 3), ("near-1", 1)]}
    assert plan_placements([("bid", 4)], sold, affinity=affinity) == {"bid": [("near-1", 2), ("near-2", 2)]}


def test_affinity_never_costs_a_host_and_then_picks_the_lowest_round_trip():
    sold = {"big": 4, "a": 2, "b": 2, "c": 1}
    # The buyer's region holds only small nodes: covering 5 units with two hosts needs "big".
    affinity = {"bid": {"big": (1, 5000), "a": (0, 300), "b": (0, 200), "c": (0, 100)}}
    plan = plan_placements([("bid", 5)], sold, affinity=affinity)
    assert len(plan["bid"]) == 2 and "big" in dict(plan["bid"])
    assert dict(plan["bid"]) == {"big": 4, "c": 1}  # the near node with the lowest round trip
    assert sum(units for _, units in plan["bid"]) == 5


@given(
    sold=st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 6), min_size=1, max_size=8),
    units=st.integers(1, 20),
    scores=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1000)), min_size=8, max_size=8),
)
def test_affinity_keeps_the_fewest_hosts_and_every_unit(sold, units, scores):
    assume(units <= sum(sold.values()))
    affinity = {"bid": {node: scores[i] for i, node in enumerate("abcdefgh")}}
    plain = plan_placements([("bid", units)], sold)["bid"]
    tied = plan_placements([("bid", units)], sold, affinity=affinity)["bid"]
    assert len(tied) == len(plain)
    assert sum(u for _, u in tied) == units and all(0 < u <= sold[n] for n, u in tied)
