"""Framework-free logic: data sources, features, training, evaluation, releases. Never imports dagster."""
