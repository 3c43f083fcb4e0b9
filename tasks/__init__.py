"""Batch entry points (nightly, backfill, republish)."""
