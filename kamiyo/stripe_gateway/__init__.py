"""The one place that talks to Stripe, shared by every feature.

`gateway` (breaker → retries → one attempt, each attempt recorded), the
PCI-safe error table in `errors`, and `library`: what else the service uses of
stripe-python (its pinned API version, its exception base class, the webhook
signature check). stripe-python is imported nowhere outside this package.
"""
