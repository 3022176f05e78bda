"""Webhooks signed per the Standard Webhooks spec, for every tenant (sponsors, merchants)."""
