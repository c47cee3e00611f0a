"""The ledger's rules: who is evicted for whom, who never is, and when a wake is refused."""

from __future__ import annotations

import pytest

from deployments.residency.ledger import CannotFit, Entry, Ledger


def ledger(budget=5.5, **states) -> Ledger:
    entries = [Entry("extractor", "ext", on_demand=False, mechanism="stop", planned_gib=2.5)]
    for i, (name, (state, last_used, in_flight)) in enumerate(states.items()):
        entries.append(Entry(name, name, on_demand=True, mechanism="stop", planned_gib=2.5, idle_sleep_s=30,
                             state=state, last_used=last_used, in_flight=in_flight))
    return Ledger(entries, budget, retry_after_s=5)


def test_the_least_recently_used_idle_model_is_evicted_first():
    book = ledger(budget=7.5, a=("awake", 10.0, 0), b=("awake", 5.0, 0), c=("asleep", 0.0, 0))
    assert [e.model_id for e in book.evictions_for(book.entries["c"])] == ["b"]


def test_nothing_is_evicted_while_there_is_room():
    book = ledger(budget=10.0, a=("awake", 1.0, 0), c=("asleep", 0.0, 0))
    assert book.evictions_for(book.entries["c"]) == []


def test_a_model_with_requests_in_flight_is_never_evicted():
    book = ledger(a=("awake", 1.0, 2), c=("asleep", 0.0, 0))
    with pytest.raises(CannotFit) as err:
        book.evictions_for(book.entries["c"])
    message = err.value.message
    assert "'c' needs 2.50 GiB" in message and "short by 2.00 GiB" in message and "a (awake, 2 in flight" in message
    assert err.value.status_code == 503 and err.value.code == "model_cannot_fit"
    assert err.value.headers == {"Retry-After": "5"}


def test_a_model_waking_or_going_to_sleep_still_holds_its_memory():
    book = ledger(a=("sleeping", 1.0, 0), c=("asleep", 0.0, 0))
    assert book.held_gib() == 5.0
    with pytest.raises(CannotFit):
        book.evictions_for(book.entries["c"])


def test_the_measured_figure_replaces_the_plan():
    book = ledger(a=("awake", 1.0, 0), c=("asleep", 0.0, 0))
    book.entries["a"].measured_gib = 0.5
    book.entries["ext"].measured_gib = 2.0
    assert book.evictions_for(book.entries["c"]) == [], "2.0 + 0.5 + 2.5 fits in 5.5"


def test_without_a_budget_nothing_is_ever_evicted():
    book = ledger(budget=None, a=("awake", 1.0, 0), b=("awake", 2.0, 0), c=("asleep", 0.0, 0))
    assert book.evictions_for(book.entries["c"]) == []


def test_idle_models_are_the_awake_on_demand_ones_past_their_idle_time():
    book = ledger(budget=None, a=("awake", 100.0, 0), b=("awake", 60.0, 0), c=("awake", 60.0, 1), d=("asleep", 0.0, 0))
    assert [e.model_id for e in book.idle(now=100.0)] == ["b"]


def test_a_busy_room_fits_later_and_a_resident_one_never():
    busy = ledger(a=("awake", 1.0, 2), c=("asleep", 0.0, 0))
    with pytest.raises(CannotFit) as err:
        busy.evictions_for(busy.entries["c"])
    assert err.value.later, "the busy on-demand model will finish and sleep: wait a turn"
    resident = ledger(budget=4.0, c=("asleep", 0.0, 0))
    with pytest.raises(CannotFit) as err:
        resident.evictions_for(resident.entries["c"])
    assert not err.value.later, "the resident extractor never sleeps: refuse now"


def test_a_model_woken_less_than_min_awake_s_ago_keeps_its_turn():
    book = ledger(a=("awake", 1.0, 0), c=("asleep", 0.0, 0))
    book.entries["a"].awake_since = 100.0
    with pytest.raises(CannotFit) as err:
        book.evictions_for(book.entries["c"], now=110.0, min_awake_s=30.0)
    assert err.value.later
    assert [e.model_id for e in book.evictions_for(book.entries["c"], now=130.0, min_awake_s=30.0)] == ["a"]
