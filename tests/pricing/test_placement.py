"""The placement planner: fewest nodes first, then best fit, never more than a node sold."""

import pytest
from hypothesis import given
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
