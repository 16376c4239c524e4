"""Shared test helpers (no tests here)."""

from __future__ import annotations


def build_optuna(url: str) -> None:
    """The application builds its own database: RDBStorage creates the schema and stamps its head."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="before-adoption")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()


def build_jupyterhub(url: str) -> None:
    """The Hub builds its own database and writes into it the way it does at run time."""
    from jupyterhub import orm

    session = orm.new_session_factory(url)()
    session.add(orm.OAuthClient(identifier="jupyterhub"))  # the Hub's own client, made at start-up
    user = orm.User(name="before-adoption")
    session.add(user)
    session.commit()
    user.new_api_token(note="made before adoption")
    session.commit()
    session.get_bind().dispose()
    session.close()


def reopen_jupyterhub(url: str) -> None:
    """The Hub's own start-up path (revision check, create_all), then reads and writes."""
    from jupyterhub import orm

    session = orm.new_session_factory(url)()
    try:
        before = orm.User.find(session, "before-adoption")
        assert before is not None and len(before.api_tokens) == 1
        session.add(orm.User(name="after-adoption"))
        session.commit()
        assert {u.name for u in session.query(orm.User)} == {"before-adoption", "after-adoption"}
    finally:
        bind = session.get_bind()
        session.close()
        bind.dispose()
