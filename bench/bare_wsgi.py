"""The service with one extra, trivial route: the bench's baseline. Never deployed."""

from kamiyo import create_app

app = create_app()


@app.get("/bench/bare")
def bare():
    return {"status": "ok"}
