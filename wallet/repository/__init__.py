"""The wallet's SQL, one repository per service: ledger, promotions, reports, carriers,
exchange."""
