"""Development tools: the local Stripe emulator and the demo runner. Not imported by the service."""
