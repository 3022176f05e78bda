"""Who pays for each usage item: the allocation rules of DESIGN.md as pure functions.

For each item, the sponsorship terms that apply (in force at the window's start, covering
the SIM and the app, not paused) take in priority order, each as much as its per-SIM cap
for the period and its budget allow; what is left is the user's, from the wallet while it
holds data, and overage after that. Items are taken in one canonical order (time of use,
SIM, boot, seq, app), so a batch's result never depends on the order its items arrived in.
No I/O here: the run loads the state, calls `allocate`, and writes what it returns.
"""

from __future__ import annotations

import decimal
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID

from flowbill.units import MB

UNCLASSIFIED = "unclassified"
# Exact money: bytes x price / 2^20 has at most 20 more decimal places than the price.
_EXACT = decimal.Context(prec=60, rounding=decimal.ROUND_FLOOR)


class PayerKind:
    SPONSOR = "sponsor"
    WALLET = "wallet"
    OVERAGE = "overage"


@dataclass(frozen=True, slots=True)
class Scope:
    """Which SIMs a policy covers: all of an automaker's, a model's, a fleet's, or a list."""

    kind: str
    automaker_id: UUID
    model: str | None = None
    fleet: str | None = None
    iccids: frozenset[str] = frozenset()

    def covers(self, sim: SimView) -> bool:
        if sim.automaker_id != self.automaker_id:
            return False
        if self.kind == "automaker":
            return True
        if self.kind == "model":
            return sim.model == self.model
        if self.kind == "fleet":
            return sim.fleet == self.fleet
        return sim.iccid in self.iccids


@dataclass(frozen=True, slots=True)
class Terms:
    """A policy's terms from `effective_from` until the next terms of the same policy."""

    policy_id: int
    sponsor_id: UUID
    effective_from: datetime
    scope: Scope
    apps: frozenset[str]
    categories: frozenset[str]
    priority: int
    cap_bytes: int | None
    unit_price: Decimal
    valid_from: datetime
    valid_until: datetime | None
    paused: bool

    def covers_app(self, app: str, category: str) -> bool:
        if category == UNCLASSIFIED:
            return False
        return app in self.apps or category in self.categories

    def valid_at(self, moment: datetime) -> bool:
        return (
            not self.paused
            and self.valid_from <= moment
            and (self.valid_until is None or moment < self.valid_until)
        )


@dataclass(frozen=True, slots=True)
class Budget:
    """A policy's lifetime budget: in bytes, in money (at its terms' unit prices), or none."""

    bytes_limit: int | None = None
    money_limit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SimView:
    iccid: str
    automaker_id: UUID | None
    model: str | None
    fleet: str | None
    driver_id: UUID | None


# Items, shares and remainders are made per usage item (100,000s a second): plain slotted
# dataclasses, not frozen ones, which cost several times more to build. Treat them as values.
@dataclass(slots=True)
class Item:
    """One stored usage item, with the period it is booked in."""

    window_start: datetime
    iccid: str
    boot: int
    seq: int
    app: str
    data_bytes: int
    period: date
    # Booked in a later period than its period of use (it arrived after that one closed).
    adjustment: bool = False
    # The day of use in the billing time zone (for daily totals).
    day: date | None = None

    @property
    def order(self) -> tuple[datetime, str, int, int, str]:
        return (self.window_start, self.iccid, self.boot, self.seq, self.app)


_ORDER = operator.attrgetter("window_start", "iccid", "boot", "seq", "app")


@dataclass(slots=True)
class Share:
    """Part of an item's bytes and who pays it."""

    item: Item
    category: str
    payer_kind: str
    payer_id: UUID | None
    data_bytes: int
    policy_id: int | None = None
    terms_from: datetime | None = None


@dataclass(slots=True)
class Spend:
    """What policies and wallets have left: read before a batch, drawn down by it."""

    # (policy id, period, iccid) -> bytes taken against the per-SIM cap
    cap_used: dict[tuple[int, date, str], int] = field(default_factory=dict)
    budgets: dict[int, Budget] = field(default_factory=dict)
    # policy id -> bytes and exact money taken so far (over the policy's life)
    used_bytes: dict[int, int] = field(default_factory=dict)
    used_money: dict[int, Decimal] = field(default_factory=dict)
    # driver -> bytes the wallet can still give
    wallets: dict[UUID, int] = field(default_factory=dict)

    # (policy id, unit price) -> bytes taken but not yet priced: money is summed per price
    # once per batch (see `settle`).
    unpriced: dict[tuple[int, Decimal], int] = field(default_factory=dict)
    # Money of policies with a money budget, in exact integer units of 10^-6 / 2^20 of the
    # currency (a price has at most 6 decimals, a byte is 2^-20 MB): checked on every take.
    _nano: dict[int, int] = field(default_factory=dict)

    def _money_nano(self, policy_id: int) -> int:
        found = self._nano.get(policy_id)
        if found is None:
            found = int(self.used_money.get(policy_id, Decimal(0)) * _NANO)
            self._nano[policy_id] = found
        return found

    def budget_left(self, terms: Terms) -> int | None:
        """Bytes the policy's budget still allows at these terms' price (None: unlimited)."""
        budget = self.budgets.get(terms.policy_id)
        if budget is None:
            return None
        left: int | None = None
        if budget.bytes_limit is not None:
            left = max(budget.bytes_limit - self.used_bytes.get(terms.policy_id, 0), 0)
        if budget.money_limit is not None and terms.unit_price > 0:
            money = int(budget.money_limit * _NANO) - self._money_nano(terms.policy_id)
            affordable = max(money, 0) // _micro(terms.unit_price)
            left = affordable if left is None else min(left, affordable)
        return left

    def cap_left(self, terms: Terms, period: date, iccid: str) -> int | None:
        if terms.cap_bytes is None:
            return None
        used = self.cap_used.get((terms.policy_id, period, iccid), 0)
        return max(terms.cap_bytes - used, 0)

    def take(self, terms: Terms, period: date, iccid: str, taken: int) -> None:
        pid = terms.policy_id
        if terms.cap_bytes is not None:
            key = (pid, period, iccid)
            self.cap_used[key] = self.cap_used.get(key, 0) + taken
        self.used_bytes[pid] = self.used_bytes.get(pid, 0) + taken
        budget = self.budgets.get(pid)
        if budget is not None and budget.money_limit is not None:
            self._nano[pid] = self._money_nano(pid) + taken * _micro(terms.unit_price)
        else:
            priced = (pid, terms.unit_price)
            self.unpriced[priced] = self.unpriced.get(priced, 0) + taken

    def settle(self) -> None:
        """Bring `used_money` up to date, exactly (the sum of bytes at one price costs the same
        as the sum of each item's cost)."""
        for (pid, price), data_bytes in self.unpriced.items():
            self.used_money[pid] = self.used_money.get(pid, Decimal(0)) + money_of(
                data_bytes, price
            )
        self.unpriced.clear()
        for pid, nano in self._nano.items():
            self.used_money[pid] = _EXACT.divide(Decimal(nano), _NANO)


_NANO = Decimal(MB * 10**6)
_MICRO: dict[Decimal, int] = {}


def _micro(price: Decimal) -> int:
    """A price per MB in millionths (prices have at most six decimals)."""
    found = _MICRO.get(price)
    if found is None:
        found = _MICRO[price] = int(price * 10**6)
        if found != price * 10**6:
            raise ValueError(f"a unit price has at most six decimals: {price}")
    return found


def money_of(data_bytes: int, unit_price: Decimal) -> Decimal:
    """The exact price of bytes at a price per MB (no rounding: statements round per line)."""
    return _EXACT.divide(_EXACT.multiply(Decimal(data_bytes), unit_price), MB)


def terms_in_force(history: Sequence[Terms], moment: datetime) -> Terms | None:
    """The terms of one policy in force at a moment (history sorted by effective_from)."""
    found: Terms | None = None
    for terms in history:
        if terms.effective_from <= moment:
            found = terms
        else:
            break
    return found


class PolicyBook:
    """Every policy's terms history, with a per-(SIM, app) cache of the policies that could
    apply; which terms actually apply is decided per item, at its window's start."""

    def __init__(self, histories: Iterable[Sequence[Terms]]) -> None:
        self.histories = [sorted(h, key=lambda t: t.effective_from) for h in histories if h]
        # SIMs named by a list scope: only their answers depend on the SIM itself; every other
        # SIM's depend on its automaker, model and fleet alone.
        self._listed = frozenset(i for h in self.histories for t in h for i in t.scope.iccids)
        # (SIM or vehicle kind, app) -> (the histories that could apply, and, when none of
        # them changes after some moment, that moment and the answer from then on)
        self._maybe: dict[
            tuple[int, str], tuple[list[list[Terms]], datetime | None, list[Terms]]
        ] = {}
        # Each SIM kind (or listed SIM) as a small number, and each SIM's, found once per
        # SimView: a key of ints and strings is cheap to hash for every item.
        self._kinds: dict[tuple[object, ...], int] = {}
        self._kind_of: dict[str, tuple[SimView, int]] = {}

    def _kind(self, sim: SimView) -> int:
        found = self._kind_of.get(sim.iccid)
        if found is not None and found[0] is sim:
            return found[1]
        if sim.iccid in self._listed:
            kind: tuple[object, ...] = (sim.iccid,)
        else:
            kind = (sim.automaker_id, sim.model, sim.fleet)
        number = self._kinds.setdefault(kind, len(self._kinds))
        self._kind_of[sim.iccid] = (sim, number)
        return number

    def candidates(self, sim: SimView, app: str, category: str, moment: datetime) -> list[Terms]:
        """The terms that apply to an item, in the order they take: priority, then policy."""
        key = (self._kind(sim), app)
        cached = self._maybe.get(key)
        if cached is None:
            maybe = [
                h
                for h in self.histories
                if any(t.covers_app(app, category) and t.scope.covers(sim) for t in h)
            ]
            steady = _steady_from(maybe)
            answer = self._pick(maybe, sim, app, category, steady) if steady is not None else []
            cached = self._maybe[key] = (maybe, steady, answer)
        maybe, steady, answer = cached
        if steady is not None and moment >= steady:
            return answer
        return self._pick(maybe, sim, app, category, moment)

    @staticmethod
    def _pick(
        maybe: list[list[Terms]], sim: SimView, app: str, category: str, moment: datetime
    ) -> list[Terms]:
        found = []
        for history in maybe:
            terms = terms_in_force(history, moment)
            if (
                terms is not None
                and terms.valid_at(moment)
                and terms.covers_app(app, category)
                and terms.scope.covers(sim)
            ):
                found.append(terms)
        if len(found) > 1:
            found.sort(key=lambda t: (t.priority, t.policy_id))
        return found


def _steady_from(histories: list[list[Terms]]) -> datetime | None:
    """The moment after which none of these histories changes (None: one has an end)."""
    latest: datetime | None = None
    for history in histories:
        last = history[-1]
        if last.valid_until is not None:
            return None
        for moment in (last.effective_from, last.valid_from):
            if latest is None or moment > latest:
                latest = moment
    return latest if latest is not None else datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class Remainder:
    """What is left of an item after its sponsors: the user's."""

    item: Item
    category: str
    driver_id: UUID | None
    data_bytes: int


Candidates = Callable[[SimView, str, str, datetime], Sequence[Terms]]


def sponsor_shares(
    items: Iterable[Item],
    *,
    sims: dict[str, SimView],
    categories: dict[str, str],
    candidates: Candidates,
    spend: Spend,
    in_order: bool = False,
) -> tuple[list[Share], list[Remainder]]:
    """Rules 1-2: in canonical order, each applicable policy takes what its cap and budget
    allow. Returns the sponsors' shares and, in the same order, what is left per item.
    `in_order`: the caller vouches that the items already come in canonical order (the run
    reads them so), which spares sorting them again."""
    shares: list[Share] = []
    left_over: list[Remainder] = []
    add_share, add_rest = shares.append, left_over.append
    category_of, sim_of = categories.get, sims.get
    cap_left, budget_left, take = spend.cap_left, spend.budget_left, spend.take
    for item in items if in_order else sorted(items, key=_ORDER):
        category = category_of(item.app, UNCLASSIFIED)
        sim = sim_of(item.iccid)
        left = item.data_bytes
        if sim is not None and sim.automaker_id is not None and category != UNCLASSIFIED:
            for terms in candidates(sim, item.app, category, item.window_start):
                taken = left
                if terms.cap_bytes is not None:
                    cap = cap_left(terms, item.period, item.iccid)
                    if cap is not None and cap < taken:
                        taken = cap
                budget = budget_left(terms)
                if budget is not None and budget < taken:
                    taken = budget
                if taken <= 0:
                    continue
                take(terms, item.period, item.iccid, taken)
                add_share(
                    Share(item, category, PayerKind.SPONSOR, terms.sponsor_id, taken,
                          terms.policy_id, terms.effective_from)
                )  # fmt: skip
                left -= taken
                if left == 0:
                    break
        if left > 0:
            add_rest(Remainder(item, category, sim.driver_id if sim is not None else None, left))
    spend.settle()
    return shares, left_over


def user_shares(left_over: Iterable[Remainder], wallets: dict[UUID, int]) -> list[Share]:
    """Rule 3: the user's share, from the wallet while it holds data (in the order given),
    overage after that; `wallets` is drawn down in place."""
    shares: list[Share] = []
    add = shares.append
    in_wallet_of = wallets.get
    for rest in left_over:
        left = rest.data_bytes
        driver = rest.driver_id
        if driver is not None:
            in_wallet = in_wallet_of(driver, 0)
            if in_wallet > 0:
                taken = left if left < in_wallet else in_wallet
                wallets[driver] = in_wallet - taken
                add(Share(rest.item, rest.category, PayerKind.WALLET, driver, taken))
                left -= taken
        if left > 0:
            add(Share(rest.item, rest.category, PayerKind.OVERAGE, driver, left))
    return shares


def allocate(
    items: Iterable[Item],
    *,
    sims: dict[str, SimView],
    categories: dict[str, str],
    candidates: Candidates,
    spend: Spend,
    in_order: bool = False,
) -> list[Share]:
    """Split each item's bytes between sponsors, the user's wallet and overage.

    `candidates` gives the applicable terms in order (see `PolicyBook`); `spend` (caps,
    budgets and wallets) is drawn down in place. The shares of an item sum to its bytes.
    `in_order`: the items already come in canonical order (see `sponsor_shares`).
    """
    shares, left_over = sponsor_shares(
        items,
        sims=sims,
        categories=categories,
        candidates=candidates,
        spend=spend,
        in_order=in_order,
    )
    return shares + user_shares(left_over, spend.wallets)


@dataclass(frozen=True, slots=True)
class AppCoverage:
    payer_kind: str  # sponsor | wallet | blocked
    sponsor_id: UUID | None = None
    policy_id: int | None = None


def coverage(
    sim: SimView,
    apps: Iterable[tuple[str, str]],
    *,
    candidates: Candidates,
    spend: Spend,
    period: date,
    now: datetime,
) -> dict[str, AppCoverage]:
    """Who pays now for each (app, category) on a SIM: the first sponsor with cap and budget
    left, else the wallet while it holds data, else nobody: the app is blocked."""
    wallet_has_data = sim.driver_id is not None and spend.wallets.get(sim.driver_id, 0) > 0
    fallback = AppCoverage("wallet" if wallet_has_data else "blocked")
    answer: dict[str, AppCoverage] = {}
    for app, category in apps:
        answer[app] = fallback
        if sim.automaker_id is None or category == UNCLASSIFIED:
            continue
        for terms in candidates(sim, app, category, now):
            cap = spend.cap_left(terms, period, sim.iccid)
            budget = spend.budget_left(terms)
            if (cap is None or cap > 0) and (budget is None or budget > 0):
                answer[app] = AppCoverage("sponsor", terms.sponsor_id, terms.policy_id)
                break
    return answer
