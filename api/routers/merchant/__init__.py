"""Merchants' endpoints: the promotion pool, campaigns and orders; IoT card sales."""
