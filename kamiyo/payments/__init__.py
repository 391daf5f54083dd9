"""Stripe customers and subscriptions: the gateway, errors and the JSON API."""
