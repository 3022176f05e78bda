"""The `flowbill` command line: the door into every job (serve, ingest, bill, …)."""
