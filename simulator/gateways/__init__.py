"""`flowbill gateway-simulator`: the carriers, the payment provider and the fulfilment provider
we cannot reach from development or tests, as one HTTP service.

On a good day each party answers at once and does what it was asked. `GatewayBehaviour` makes
the day worse: slow answers, 503s before anything happened, requests that hang and are never
applied, and the nasty case, requests that are applied and whose answer is then lost. Every
request is idempotent on its request id, as with the real parties, so a client that resubmits
after a timeout never has a request applied twice; `GET /_simulator/ledger` shows what the
parties actually did, so tests can check exactly that.

`behaviour` is how the parties behave and `arguments` sets it from the command line; `schemas`
are the requests they take; `parties` is their books and how a request is answered, once;
`callbacks` tells our service what a pending request came to; `carriers` and `providers` are the
parties' endpoints; `app` puts them in one HTTP service.
"""
