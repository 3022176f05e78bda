"""IoT cards sold by merchants, one module per concern: `inventory` (the operator's card
batches and wholesale plans), `merchants` (seller profiles, retail prices, stores), `cards`
(a card, its lifecycle and what it may do now), `commands` (suspend, resume, terminate, now,
earlier or scheduled), `verification` (real names), `orders` (purchases, recharges, refunds),
`devices` (activation and the IMEI), `usage` (quota, thresholds, the sweep) and `statements`
(statements, buyers, invoices). `iot_cards.settlement` talks to the outside parties.

Services take a connection and never commit: the caller owns the transaction. Months are the
billing calendar's (`flowbill.periods.Calendar`), passed in by the caller.
"""
