# Copy to instance/config.py and fill in. instance/ is git-ignored: secrets stay on the host.
# Every value here can also come from the environment (the environment wins).

# SECRET_KEY = "a long random string"            # python -c "import secrets; print(secrets.token_hex(32))"
# DATABASE_URL = "sqlite:////var/lib/kamiyo/kamiyo.db"
# REDIS_URL = "redis://127.0.0.1:6379/0"
# STRIPE_SECRET_KEY = "sk_live_..."
# STRIPE_PUBLISHABLE_KEY = "pk_live_..."
# STRIPE_WEBHOOK_SECRET = "whsec_current,whsec_previous"   # comma-separated during rotation
# STRIPE_API_VERSION = "2026-10-28.endive"
# SUPPORT_CONTACT = "support@kamiyo.ai"
