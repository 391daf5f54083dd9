"""Extensions, created unbound here and bound to the app in create_app()."""

import sqlite3
from typing import TYPE_CHECKING, cast

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.engine import CursorResult, Engine, Result
from sqlalchemy.orm import DeclarativeBase

# Named constraints, so migrations can alter and drop them on every database
# (SQLite batch mode and PostgreSQL alike).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)

# Models subclass `Model`: db.Model is made at run time, so a type checker cannot see it.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model


def rowcount(result: Result) -> int:
    """Rows an UPDATE or DELETE matched (Session.execute types its result as a plain Result)."""
    return cast(CursorResult, result).rowcount


migrate = Migrate(render_as_batch=True)

# Rate limits. No default limits: each view opts in with @limiter.limit(...).
# The client is REMOTE_ADDR, which ProxyFix rewrites only when TRUSTED_PROXY_COUNT > 0.
# Storage comes from RATELIMIT_STORAGE_URI (see kamiyo/webhooks/limiting.py). A store
# that is down fails open (logged): it must not turn Stripe's deliveries away.
limiter = Limiter(key_func=get_remote_address, swallow_errors=True)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    # WAL lets readers run beside the one writer; foreign keys are off by default
    # in SQLite. synchronous=FULL syncs the log at each commit (NORMAL would lose the
    # last commits with a power loss: webhooks already answered 200, never sent again);
    # group commit makes that one sync per batch. The busy timeout itself is set
    # through connect_args (see create_app).
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()
