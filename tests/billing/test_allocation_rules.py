"""The allocation rules as pure functions: exhaustive properties over random fleets."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from sponsors.allocation import (
    MB,
    Budget,
    Item,
    PayerKind,
    PolicyBook,
    Scope,
    Share,
    SimView,
    Spend,
    Terms,
    allocate,
    coverage,
)

AUTOMAKER = UUID(int=1)
MAP_VENDOR = UUID(int=2)
MUSIC = UUID(int=3)
DRIVERS = [UUID(int=100 + n) for n in range(3)]
ICCIDS = [f"898600000000000000{n:02d}" for n in range(4)]
SIMS = {
    iccid: SimView(iccid, AUTOMAKER, "M1" if n % 2 else "M2", None, DRIVERS[n % 3])
    for n, iccid in enumerate(ICCIDS)
}
CATEGORIES = {"telematics": "telematics", "nav.amap": "navigation", "music.qq": "music"}
APPS = [*CATEGORIES, "video.unknown"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD = date(2026, 11, 1)


def terms(
    policy_id: int,
    sponsor: UUID,
    *,
    categories: frozenset[str],
    priority: int = 100,
    cap: int | None = None,
    price: str = "0.05",
    scope: Scope | None = None,
    effective_from: datetime = T0 - timedelta(days=30),
    valid_until: datetime | None = None,
    paused: bool = False,
) -> Terms:
    return Terms(
        policy_id=policy_id, sponsor_id=sponsor, effective_from=effective_from,
        scope=scope or Scope("automaker", AUTOMAKER), apps=frozenset(),
        categories=categories, priority=priority, cap_bytes=cap, unit_price=Decimal(price),
        valid_from=effective_from, valid_until=valid_until, paused=paused,
    )  # fmt: skip


def car_book(*, music_cap: int, nav_budget: int | None) -> tuple[PolicyBook, Spend]:
    book = PolicyBook(
        [
            [terms(1, AUTOMAKER, categories=frozenset({"telematics"}))],
            [terms(2, MAP_VENDOR, categories=frozenset({"navigation"}))],
            [terms(3, MUSIC, categories=frozenset({"music"}), cap=music_cap)],
        ]
    )
    spend = Spend(budgets={2: Budget(bytes_limit=nav_budget)} if nav_budget else {})
    return book, spend


items_strategy = st.lists(
    st.tuples(
        st.integers(0, 3), st.integers(0, 600), st.sampled_from(APPS),
        st.integers(0, 40 * MB),
    ),
    min_size=1, max_size=60,
)  # fmt: skip


def make_items(raw: list[tuple[int, int, str, int]]) -> list[Item]:
    seen = set()
    items = []
    for sim, minute, app, data_bytes in raw:
        if (sim, minute, app) in seen:
            continue
        seen.add((sim, minute, app))
        start = T0 + timedelta(minutes=minute)
        items.append(Item(start, ICCIDS[sim], 1, minute, app, data_bytes, PERIOD))
    return items


def run(
    items: list[Item], *, music_cap: int, nav_budget: int | None, wallets: dict[UUID, int]
) -> list[Share]:
    book, spend = car_book(music_cap=music_cap, nav_budget=nav_budget)
    spend.wallets = dict(wallets)
    return allocate(
        items, sims=SIMS, categories=CATEGORIES, candidates=book.candidates, spend=spend
    )


def per_payer(shares: list[Share]) -> Counter[tuple[str, UUID | None]]:
    totals: Counter[tuple[str, UUID | None]] = Counter()
    for share in shares:
        totals[(share.payer_kind, share.payer_id)] += share.data_bytes
    return totals


wallets_strategy = st.dictionaries(st.sampled_from(DRIVERS), st.integers(0, 200 * MB))
# The car fleet's usage, caps, budgets and wallets, for the properties below.
car_fleets = {
    "raw": items_strategy,
    "music_cap": st.integers(1, 100 * MB),
    "nav_budget": st.none() | st.integers(1, 200 * MB),
    "wallets": wallets_strategy,
}


@settings(max_examples=200, deadline=None)
@given(
    **car_fleets,
    seed=st.integers(0, 2**32),
)
def test_every_item_is_paid_exactly_and_arrival_order_changes_nothing(
    raw: list[tuple[int, int, str, int]],
    music_cap: int,
    nav_budget: int | None,
    wallets: dict[UUID, int],
    seed: int,
) -> None:
    items = make_items(raw)
    shares = run(items, music_cap=music_cap, nav_budget=nav_budget, wallets=wallets)
    paid: Counter[tuple[object, ...]] = Counter()
    for share in shares:
        assert share.data_bytes > 0
        paid[share.item.order] += share.data_bytes
    assert paid == {i.order: i.data_bytes for i in items if i.data_bytes > 0}

    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    again = run(shuffled, music_cap=music_cap, nav_budget=nav_budget, wallets=wallets)
    assert per_payer(again) == per_payer(shares)
    assert again == shares


@settings(max_examples=200, deadline=None)
@given(
    **car_fleets,
    cut=st.integers(0, 60),
    seed=st.integers(0, 2**32),
)
def test_totals_per_payer_do_not_depend_on_how_items_are_split_into_batches(
    raw: list[tuple[int, int, str, int]],
    music_cap: int,
    nav_budget: int | None,
    wallets: dict[UUID, int],
    cut: int,
    seed: int,
) -> None:
    # Items arrive in any order and the run may take them in two batches: caps, budgets and
    # wallets carry over, so each sponsor's total and the users' total are the same as in one
    # batch, and so is each user's unless a budget shared by many SIMs ran out (then which
    # SIM's item it paid last depends on which arrived first).
    items = make_items(raw)
    arrival = list(items)
    random.Random(seed).shuffle(arrival)
    book, spend = car_book(music_cap=music_cap, nav_budget=nav_budget)
    spend.wallets = dict(wallets)
    shares = []
    for batch in (arrival[:cut], arrival[cut:]):
        shares += allocate(
            batch, sims=SIMS, categories=CATEGORIES, candidates=book.candidates, spend=spend
        )
    one_batch = run(items, music_cap=music_cap, nav_budget=nav_budget, wallets=wallets)
    if nav_budget is None:
        assert per_payer(shares) == per_payer(one_batch)
    assert per_sponsor_and_users(shares) == per_sponsor_and_users(one_batch)


@settings(max_examples=200, deadline=None)
@given(
    **car_fleets,
    chunk=st.integers(1, 61),
)
def test_a_batch_computed_chunk_by_chunk_pays_exactly_as_in_one_pass(
    raw: list[tuple[int, int, str, int]],
    music_cap: int,
    nav_budget: int | None,
    wallets: dict[UUID, int],
    chunk: int,
) -> None:
    # The run computes a batch in chunks of its canonical order while the database stores
    # the chunk before: caps, budgets and wallets carry from chunk to chunk, so every share is
    # the one a single pass gives, item by item.
    items = sorted(make_items(raw), key=lambda i: i.order)
    book, spend = car_book(music_cap=music_cap, nav_budget=nav_budget)
    spend.wallets = left = dict(wallets)
    chunked = []
    for first in range(0, len(items), chunk):
        chunked += allocate(
            items[first : first + chunk], sims=SIMS, categories=CATEGORIES,
            candidates=book.candidates, spend=spend,
        )  # fmt: skip
    one_pass = run(items, music_cap=music_cap, nav_budget=nav_budget, wallets=wallets)
    assert sorted(map(share_key, chunked)) == sorted(map(share_key, one_pass))
    assert left == {d: w - per_payer(one_pass)[("wallet", d)] for d, w in wallets.items()}


def share_key(share: Share) -> tuple[object, ...]:
    return (*share.item.order, share.payer_kind, str(share.payer_id), share.policy_id,
            share.data_bytes)  # fmt: skip


def per_sponsor_and_users(shares: list[Share]) -> Counter[UUID | None]:
    totals: Counter[UUID | None] = Counter()
    for share in shares:
        totals[share.payer_id if share.payer_kind == PayerKind.SPONSOR else None] += (
            share.data_bytes
        )
    return totals


@settings(max_examples=200, deadline=None)
@given(raw=items_strategy, music_cap=st.integers(1, 100 * MB))
def test_a_capped_sponsor_pays_up_to_the_cap_per_sim_and_the_user_the_rest(
    raw: list[tuple[int, int, str, int]], music_cap: int
) -> None:
    items = make_items(raw)
    shares = run(items, music_cap=music_cap, nav_budget=None, wallets={})
    for iccid in ICCIDS:
        music = sum(i.data_bytes for i in items if i.iccid == iccid and i.app == "music.qq")
        paid = sum(s.data_bytes for s in shares if s.item.iccid == iccid and s.payer_id == MUSIC)
        assert paid == min(music, music_cap)
        overage = sum(
            s.data_bytes for s in shares
            if s.item.iccid == iccid and s.item.app == "music.qq"
            and s.payer_kind == PayerKind.OVERAGE
        )  # fmt: skip
        assert overage == music - paid


def test_a_cap_reached_in_the_middle_of_an_item_splits_it_exactly() -> None:
    items = [
        Item(T0, ICCIDS[0], 1, 1, "music.qq", 700 * MB, PERIOD),
        Item(T0 + timedelta(minutes=1), ICCIDS[0], 1, 2, "music.qq", 500 * MB, PERIOD),
    ]
    shares = run(items, music_cap=1024 * MB, nav_budget=None, wallets={DRIVERS[0]: 100 * MB})
    assert [(s.item.seq, s.payer_kind, s.data_bytes) for s in shares] == [
        (1, PayerKind.SPONSOR, 700 * MB),
        (2, PayerKind.SPONSOR, 324 * MB),
        (2, PayerKind.WALLET, 100 * MB),
        (2, PayerKind.OVERAGE, 76 * MB),
    ]


def test_a_money_budget_buys_exactly_what_it_can_at_the_unit_price() -> None:
    book = PolicyBook([[terms(2, MAP_VENDOR, categories=frozenset({"navigation"}), price="0.03")]])
    # 1.00 CNY at 0.03 CNY per MB: 33.33… MB, floor to whole bytes.
    spend = Spend(budgets={2: Budget(money_limit=Decimal("1.00"))})
    items = [Item(T0, ICCIDS[1], 1, 1, "nav.amap", 50 * MB, PERIOD)]
    shares = allocate(
        items, sims=SIMS, categories=CATEGORIES, candidates=book.candidates, spend=spend
    )
    sponsored = shares[0].data_bytes
    assert sponsored == int(Decimal(MB) / Decimal("0.03"))
    assert spend.used_money[2] <= Decimal("1.00")
    assert Decimal("1.00") - spend.used_money[2] < Decimal("0.03") / MB
    assert spend.budget_left(book.histories[0][0]) == 0


def test_priority_then_policy_id_orders_the_sponsors() -> None:
    book = PolicyBook(
        [
            [terms(7, MUSIC, categories=frozenset({"music"}), priority=10, cap=10 * MB)],
            [terms(5, AUTOMAKER, categories=frozenset({"music"}), priority=20)],
            [terms(9, MAP_VENDOR, categories=frozenset({"music"}), priority=10, cap=5 * MB)],
        ]
    )
    items = [Item(T0, ICCIDS[0], 1, 1, "music.qq", 40 * MB, PERIOD)]
    shares = allocate(
        items, sims=SIMS, categories=CATEGORIES, candidates=book.candidates, spend=Spend()
    )
    assert [(s.policy_id, s.data_bytes) for s in shares] == [
        (7, 10 * MB), (9, 5 * MB), (5, 25 * MB),
    ]  # fmt: skip


def test_terms_follow_the_time_of_use_and_paused_or_expired_terms_pay_nothing() -> None:
    change = T0 + timedelta(days=10)
    book = PolicyBook(
        [
            [
                terms(1, MAP_VENDOR, categories=frozenset({"navigation"}), price="0.05"),
                terms(1, MAP_VENDOR, categories=frozenset({"navigation"}), price="0.08",
                      effective_from=change),
                terms(1, MAP_VENDOR, categories=frozenset({"navigation"}), paused=True,
                      effective_from=change + timedelta(days=5)),
            ],
            [terms(2, AUTOMAKER, categories=frozenset({"telematics"}),
                   valid_until=T0 + timedelta(days=1))],
        ]
    )  # fmt: skip
    items = [
        Item(change - timedelta(minutes=1), ICCIDS[0], 1, 1, "nav.amap", MB, PERIOD),
        Item(change, ICCIDS[0], 1, 2, "nav.amap", MB, PERIOD),
        Item(change + timedelta(days=6), ICCIDS[0], 1, 3, "nav.amap", MB, PERIOD),
        Item(T0 + timedelta(days=2), ICCIDS[0], 1, 4, "telematics", MB, PERIOD),
    ]
    shares = allocate(
        items, sims=SIMS, categories=CATEGORIES, candidates=book.candidates, spend=Spend()
    )
    assert sorted((s.item.seq, s.payer_kind, s.terms_from) for s in shares) == [
        (1, PayerKind.SPONSOR, T0 - timedelta(days=30)),
        (2, PayerKind.SPONSOR, change),
        (3, PayerKind.OVERAGE, None),
        (4, PayerKind.OVERAGE, None),
    ]


def test_unclassified_apps_and_sims_without_a_vehicle_are_never_sponsored() -> None:
    book = PolicyBook([[terms(1, AUTOMAKER, categories=frozenset({"telematics", "other"}))]])
    stranger = "89860099999999999990"
    items = [
        Item(T0, ICCIDS[0], 1, 1, "video.unknown", MB, PERIOD),
        Item(T0, stranger, 1, 1, "telematics", MB, PERIOD),
    ]
    shares = allocate(
        items, sims=SIMS, categories=CATEGORIES, candidates=book.candidates, spend=Spend()
    )
    assert {(s.item.iccid, s.payer_kind, s.payer_id) for s in shares} == {
        (ICCIDS[0], PayerKind.OVERAGE, DRIVERS[0]),
        (stranger, PayerKind.OVERAGE, None),
    }


def test_scopes_cover_their_vehicles_only() -> None:
    other = uuid4()
    sims = {
        "a": SimView("a", AUTOMAKER, "M1", "taxi", None),
        "b": SimView("b", AUTOMAKER, "M2", None, None),
        "c": SimView("c", other, "M1", "taxi", None),
    }
    assert [s.covers(sims["a"]) for s in (
        Scope("automaker", AUTOMAKER), Scope("model", AUTOMAKER, model="M1"),
        Scope("fleet", AUTOMAKER, fleet="taxi"), Scope("sims", AUTOMAKER, iccids=frozenset("a")),
    )] == [True, True, True, True]  # fmt: skip
    assert not Scope("model", AUTOMAKER, model="M1").covers(sims["b"])
    assert not Scope("fleet", AUTOMAKER, fleet="taxi").covers(sims["c"])
    assert not Scope("automaker", AUTOMAKER).covers(sims["c"])


def test_coverage_names_the_payer_and_blocks_when_nobody_pays() -> None:
    book, spend = car_book(music_cap=10 * MB, nav_budget=None)
    sim = SIMS[ICCIDS[0]]
    apps = [(a, CATEGORIES.get(a, "unclassified")) for a in APPS]
    spend.cap_used[(3, PERIOD, sim.iccid)] = 10 * MB
    state = coverage(sim, apps, candidates=book.candidates, spend=spend, period=PERIOD, now=T0)
    assert state["telematics"].sponsor_id == AUTOMAKER
    assert state["nav.amap"].sponsor_id == MAP_VENDOR
    assert state["music.qq"].payer_kind == "blocked"
    assert state["video.unknown"].payer_kind == "blocked"
    spend.wallets[sim.driver_id] = 1  # type: ignore[index]
    state = coverage(sim, apps, candidates=book.candidates, spend=spend, period=PERIOD, now=T0)
    assert state["music.qq"].payer_kind == "wallet"
