"""The card lifecycle as a pure table: which command, by whom, moves a card from which state
to which. The service applies it; nothing here touches the database.

inventory → sold → pending_verification → active ⇄ suspended (merchant or holder);
active → blocked by the system (quota used up, IMEI mismatch) and back when the cause
clears; terminated is final.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    INVENTORY = "inventory"
    SOLD = "sold"
    PENDING_VERIFICATION = "pending_verification"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BLOCKED = "blocked"
    TERMINATED = "terminated"


class Actor(enum.StrEnum):
    OPERATOR = "operator"
    MERCHANT = "merchant"
    HOLDER = "holder"
    SYSTEM = "system"


class Command(enum.StrEnum):
    SELL = "sell"
    RELEASE = "release"
    SUBMIT_VERIFICATION = "submit_verification"
    REJECT_VERIFICATION = "reject_verification"
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    RESUME = "resume"
    BLOCK = "block"
    UNBLOCK = "unblock"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class Rule:
    sources: frozenset[State]
    target: State
    actors: frozenset[Actor]


def _rule(sources: set[State], target: State, actors: set[Actor]) -> Rule:
    return Rule(frozenset(sources), target, frozenset(actors))


S, A = State, Actor
RULES: dict[Command, Rule] = {
    Command.SELL: _rule({S.INVENTORY}, S.SOLD, {A.SYSTEM}),
    Command.RELEASE: _rule({S.SOLD, S.PENDING_VERIFICATION}, S.INVENTORY, {A.SYSTEM}),
    Command.SUBMIT_VERIFICATION: _rule({S.SOLD}, S.PENDING_VERIFICATION, {A.HOLDER}),
    Command.REJECT_VERIFICATION: _rule({S.PENDING_VERIFICATION}, S.SOLD, {A.SYSTEM}),
    Command.ACTIVATE: _rule({S.PENDING_VERIFICATION}, S.ACTIVE, {A.HOLDER, A.MERCHANT}),
    Command.SUSPEND: _rule({S.ACTIVE, S.BLOCKED}, S.SUSPENDED, {A.HOLDER, A.MERCHANT}),
    # Resuming a card whose block causes still hold lands it in blocked (see `target`).
    Command.RESUME: _rule({S.SUSPENDED}, S.ACTIVE, {A.HOLDER, A.MERCHANT}),
    Command.BLOCK: _rule({S.ACTIVE}, S.BLOCKED, {A.SYSTEM}),
    Command.UNBLOCK: _rule({S.BLOCKED}, S.ACTIVE, {A.SYSTEM}),
    Command.TERMINATE: _rule(
        {S.INVENTORY, S.SOLD, S.PENDING_VERIFICATION, S.ACTIVE, S.SUSPENDED, S.BLOCKED},
        S.TERMINATED,
        {A.MERCHANT, A.OPERATOR, A.SYSTEM},
    ),
}
del S, A

# What each audience may send as a plain command (the others come with their own request).
MERCHANT_COMMANDS = (Command.SUSPEND, Command.RESUME, Command.TERMINATE)
HOLDER_COMMANDS = (Command.SUSPEND, Command.RESUME)


def allowed(state: State, actor: Actor) -> list[str]:
    """The commands `actor` may give a card in `state`, in the table's order."""
    return [
        command.value
        for command, rule in RULES.items()
        if state in rule.sources and actor in rule.actors
    ]


def can(command: Command, state: State, actor: Actor) -> bool:
    rule = RULES[command]
    return state in rule.sources and actor in rule.actors


def target(command: Command, *, block_reasons: list[str]) -> State:
    """Where the command takes the card; a resumed card with block causes is blocked."""
    if command is Command.RESUME and block_reasons:
        return State.BLOCKED
    return RULES[command].target
