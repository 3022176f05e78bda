"""Endpoints every tenant has: who am I, API keys, webhook endpoints."""
