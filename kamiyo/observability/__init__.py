"""Logging, correlation ids, metrics and alerts."""
