"""Signed webhooks (Standard Webhooks): per-user signing secrets, the deliveries a job's changes produce, and the
actor that posts them."""
