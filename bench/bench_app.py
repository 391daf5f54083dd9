"""The service plus one bare route, for benchmarks only (never imported by the service)."""

from kamiyo import create_app

app = create_app()


@app.get("/bench/bare")
def bare():
    return {"ok": True}
