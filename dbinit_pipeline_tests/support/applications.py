"""Shared test helpers (no tests here)."""

from __future__ import annotations


def build_optuna(url: str) -> None:
    """The application builds its own database: RDBStorage creates the schema and stamps its head."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="before-adoption")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()
